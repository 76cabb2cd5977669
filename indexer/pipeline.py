"""One index run: scan, apply the cheap changes, decode in workers, encode in batches, commit.

    with collection.writer(text_encoder) as writer:
        summary = run_index(writer, load_encoder, [Path("~/Photos")], IndexOptions(workers=4))

``load_encoder`` is called only when some file must be decoded, so a re-scan that finds nothing
new never loads a model. Every change goes through the collection's writer, the one owner of
the catalog and the vector stores.

Order of work, and why it is safe to kill at any moment:

1. Scan the roots and diff against the catalog (`indexer.scan`). Unchanged files are not read.
2. Deleted, moved and touched files are applied to the catalog first; none needs decoding.
3. New and changed files are decoded in worker processes (`indexer.workers`) with a bounded
   look-ahead while the main process encodes finished files in batches and commits them. Each
   asset is upserted with its items in one transaction, so a kill never leaves half an asset,
   and a committed file has the scanned size and mtime, so the next run sees it as unchanged.
4. The vector stores are flushed every `save_every_s` and at the end. The catalog is the truth:
   the collection brings a stale store level with the catalog on the next open, so a kill
   between a commit and a flush loses nothing and counts nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.exc import DBAPIError, StatementError

from indexer.encoding import Encoded, encode_files, is_encoded
from indexer.scan import (
    LINK_POLICIES,
    ChangePlan,
    FileEntry,
    KnownAsset,
    is_under,
    resolve_root,
    scan,
)
from indexer.signals import stops_on_sigterm
from indexer.sources import SOURCES, SourceSpec
from indexer.sources.audio import AudioOptions
from indexer.sources.base import ASSET_AUDIO, ASSET_IMAGE, ASSET_TEXT, ASSET_VIDEO
from indexer.sources.image import DEFAULT_LIMITS, ImageLimits
from indexer.sources.ocr import OcrOptions
from indexer.sources.subtitles import SUBTITLE_EXTENSIONS, media_for_subtitles
from indexer.sources.text import TextOptions
from indexer.sources.video import VideoOptions
from indexer.summary import (
    IndexSummary,
    NoProgress,
    ProgressReporter,
    SkippedFile,
    StageTiming,
    TruncatedFile,
)
from indexer.workers import (
    PICTURE_KINDS,
    Decoded,
    DecodeJob,
    Failed,
    InlineDecoder,
    Outcome,
    ProcessDecoder,
    WorkerConfig,
    replay_logs,
)
from mmsearch.catalog import AssetInfo, Catalog, ItemData
from mmsearch.errors import ConfigError

if TYPE_CHECKING:
    from indexer.jpeg_batch import BatchJpegDecoder
    from indexer.ray_ingest import RayDecoder
    from mmsearch.models import Encoder
    from mmsearch.models.image_trace import TracedIdentity
    from mmsearch.models.preprocess import ImagePreprocess
    from mmsearch.models.registry import ModelSpec
    from mmsearch.store import CollectionWriter

log = logging.getLogger(__name__)

ASSET_KINDS = (ASSET_IMAGE, ASSET_VIDEO, ASSET_AUDIO, ASSET_TEXT)
JPEG_DECODERS = ("auto", "device", "pillow")
MAX_HOLD_S = 5.0  # decoded files wait at most this long for a full batch before being committed
DECODER_NICENESS = 10
"""Nice value added to the decoding processes when the encoder runs on the CPU: they then run
while its threads wait instead of preempting them (measured in the peers harness on 2 cores)."""
CPU_BATCH = 32
"""Items per forward pass on a CPU unless asked otherwise: ViT-B-32 in bf16 on the 2-core AMX
Xeon encoded 8-10% faster in whole runs at 32 than at 64 (why is not established; one candidate:
a 64-picture float32 input is 38.5 MB, above glibc's largest mmap threshold, so every batch would
map and zero fresh pages)."""
GPU_BATCH = 64
"""Items per forward pass on a GPU unless asked otherwise."""
_META_FIELDS = frozenset(f.name for f in fields(AssetInfo)) - {
    "path", "kind", "size", "mtime_ns", "content_hash", "folder_id", "id", "indexed_at"
}  # fmt: skip


@dataclass(frozen=True)
class IndexOptions:
    """How an index run decodes, batches and commits."""

    workers: int = 0  # decode processes; 0 = auto (the CPUs this process may use, at least 1)
    batch_size: int = 0  # items per encoder forward pass; 0 = auto (`encoder_batch`)
    lookahead: int = 16  # batches of items decoded ahead of the encoder: while the model loads,
    # then while it is slower than decoding (bounds memory: 16 x 64 pictures at 224 px, 150 MB)
    include_hidden: bool = False  # also index files and folders whose names start with "."
    commit_every: int = 256  # files per commit round / delete transaction: a kill loses little
    save_every_s: float = 30.0  # seconds between saves of the index file (also saved at the end)
    kinds: frozenset[str] | None = None  # only these asset kinds ("image", ...); None = all
    video: VideoOptions | None = None  # keyframes and sound; None = defaults, sound as `audio`
    audio: AudioOptions | None = None  # transcription of recordings; None = defaults
    text: TextOptions | None = None  # passages of documents; None = defaults
    max_image_pixels: int = DEFAULT_LIMITS.max_pixels  # pictures with more pixels are skipped
    max_file_bytes: int = DEFAULT_LIMITS.max_bytes  # picture files larger than this are skipped
    in_process: bool = False  # decode in this process: no worker start-up, but no crash isolation
    follow_symlinks: str = "inside"  # links followed: "inside" the indexed folders, "all", "none"
    ocr: bool | None = None  # read words in pictures (Tesseract); None = the collection's choice
    patches: bool | None = None  # store patch features for the ITM reranker; None = when the
    # encoder has a patch-reading companion; True also re-encodes pictures stored without them
    ray: str | None = None  # decode and encode on a Ray cluster: "auto", "local" or an address
    jpeg_decoder: str = "auto"  # "device": JPEGs in batches on the encoder's device (nvjpeg on a
    # GPU; `indexer.jpeg_batch`); "pillow": in the worker processes; "auto": device on a GPU

    def __post_init__(self) -> None:
        if self.batch_size < 0:
            raise ConfigError(f"batch_size must be 0 (auto) or more, not {self.batch_size}.")
        for name in (
            "lookahead",
            "commit_every",
            "max_image_pixels",
            "max_file_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 (auto) or more, not {self.workers}.")
        if self.save_every_s < 0:
            raise ConfigError(f"save_every_s cannot be negative ({self.save_every_s}).")
        if self.follow_symlinks not in LINK_POLICIES:
            raise ConfigError(
                f"follow_symlinks must be one of {', '.join(LINK_POLICIES)}, not {self.follow_symlinks!r}."
            )
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(
                f"jpeg_decoder must be one of {', '.join(JPEG_DECODERS)}, not {self.jpeg_decoder!r}."
            )
        unknown = sorted(set(self.kinds or ()) - set(ASSET_KINDS))
        if unknown:
            raise ConfigError(
                f"Unknown asset kind(s) {', '.join(unknown)}; choose from {', '.join(ASSET_KINDS)}."
            )

    @property
    def lookahead_items(self) -> int:
        """Items decoded ahead of the encoder at most (`lookahead` batches of the larger size)."""
        return self.lookahead * max(self.batch_size, GPU_BATCH)

    def worker_count(self, files: int) -> int:
        """Processes to start for this many files: never more than there are files."""
        wanted = self.workers or _usable_cpus()
        return max(1, min(wanted, files))

    def worker_config(self, preprocess: ImagePreprocess, niceness: int = 0) -> WorkerConfig:
        audio = self.audio or AudioOptions()
        return WorkerConfig(
            preprocess=preprocess,
            image_size=max(preprocess.size),
            image_limits=ImageLimits(self.max_image_pixels, self.max_file_bytes),
            video=self.video or VideoOptions(audio=audio),
            audio=audio,
            text=self.text or TextOptions(),
            ocr=OcrOptions(enabled=bool(self.ocr)),
            log_level=min(
                logging.getLogger(n).getEffectiveLevel() for n in ("indexer", "mmsearch")
            ),
            niceness=niceness,
        )


@dataclass(frozen=True)
class ExpectedEncoder:
    """The encoder a run will load, as known before it loads: its model and requested
    precision and, where the architecture's JSON tells it (`expected_preprocess`), its input."""

    spec: ModelSpec
    precision: str = "auto"  # as asked ("auto" is resolved where the model runs)
    preprocess: ImagePreprocess | None = None  # None: known only once the model is built
    device: str = "auto"  # as asked

    @classmethod
    def of(cls, encoder: Encoder) -> ExpectedEncoder:
        """What a loaded encoder is (tests, and callers holding a model already)."""
        return cls(encoder.spec, encoder.requested_precision, encoder.preprocess, encoder.device)


@dataclass(frozen=True)
class KnownEncoder:
    """A Ray run's encoder as its driver knows it from the record of the image tower traced by
    an earlier run (`image_trace.traced_identity`): enough to bind the collection and to tag
    from the cached tag vectors, so the driver neither loads the model nor imports torch while
    the actors start (1.3-1.7 s of a 1,000-picture run on 2 cores)."""

    spec: ModelSpec
    requested_precision: str
    identity: TracedIdentity

    name = property(lambda self: self.identity.name)
    dim = property(lambda self: self.identity.dim)
    weights_id = property(lambda self: self.identity.weights_id)
    precision = property(lambda self: self.identity.precision)
    device = property(lambda self: self.identity.device)
    preprocess = property(lambda self: self.identity.preprocess)

    @classmethod
    def of(cls, expected: ExpectedEncoder | None) -> KnownEncoder | None:
        """The driver's view where the encoder would run on this machine's CPU and a trace of it
        is recorded; else None (the driver loads the encoder as before)."""
        if expected is None or expected.device not in ("auto", "cpu"):
            return None
        if expected.device == "auto" and nvidia_device_present():
            return None  # the encoder may load onto a GPU, where there are no traces
        from mmsearch.models.image_trace import traced_identity

        identity = traced_identity(expected.spec, expected.precision)
        if identity is None or (expected.preprocess and expected.preprocess != identity.preprocess):
            return None
        return cls(expected.spec, expected.precision, identity)


def nvidia_device_present() -> bool:
    """Whether this machine shows an NVIDIA GPU, told without importing torch (its device nodes)."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def decodes_jpegs_on_device(choice: str, device: str) -> bool:
    """Whether JPEGs are decoded in batches on the encoder's `device` (`IndexOptions.jpeg_decoder`):
    when asked, and by default on a GPU, where Pillow in worker processes cannot keep up."""
    return choice == "device" or (choice == "auto" and device.split(":")[0] == "cuda")


def may_decode_jpegs_on_device(choice: str, device: str) -> bool:
    """`decodes_jpegs_on_device` before the model has loaded (and torch is imported): "auto" on a
    machine with an NVIDIA device node may turn out to use the GPU."""
    if choice != "auto" or device != "auto":
        return decodes_jpegs_on_device(choice, device)
    return nvidia_device_present()


def encoder_batch(device: str, asked: int = 0) -> int:
    """Items per forward pass: `asked`, else `CPU_BATCH` on a CPU and `GPU_BATCH` elsewhere."""
    if asked:
        return asked
    return CPU_BATCH if device.split(":")[0] == "cpu" else GPU_BATCH


def stores_patches_by_default(encoder_name: str) -> bool:
    """Patch features are stored when the encoder has an ITM companion that reads them."""
    from mmsearch.models.itm import itm_for_encoder

    return itm_for_encoder(encoder_name) is not None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@stops_on_sigterm
def run_index(
    writer: CollectionWriter,
    load_encoder: Callable[[], Encoder],
    roots: Sequence[Path | str],
    options: IndexOptions = IndexOptions(),
    progress: ProgressReporter | None = None,
    expected: ExpectedEncoder | None = None,
) -> IndexSummary:
    """Bring the collection level with the files under `roots`; bad files are skipped and listed.

    `expected`, what `load_encoder` will give as far as it is known before it loads, lets
    decoding (and Ray's actors) start while the model loads."""
    started = time.monotonic()
    if not roots:
        raise ConfigError("Nothing to index: give at least one folder or file.")
    catalog = writer.catalog
    sources = selected_sources(options.kinds)
    scanning = time.monotonic()
    report = scan(
        list(roots),
        known_assets(catalog),
        sources,
        include_hidden=options.include_hidden,
        follow_symlinks=options.follow_symlinks,
    )
    summary = IndexSummary(
        skipped=[SkippedFile(str(p.path), p.reason) for p in report.problems],
        kept=len(report.plan.kept),
    )
    plan = report.plan
    summary.stages["scan"] = StageTiming(time.monotonic() - scanning, plan_size(plan))
    set_aside_companion_subtitles(plan)
    if options.patches:
        add_pictures_missing_patches(plan, catalog)
    options = replace(options, ocr=ocr_choice(options.ocr, writer))
    if options.ocr:
        add_pictures_missing_ocr(plan, catalog)
    folders = _Folders(catalog, roots)
    changes = _Changes(writer, options.save_every_s, summary)
    apply_cheap_changes(plan, changes, folders, options.commit_every)
    ingest = _Ingest(plan, sources, load_encoder, options, changes, folders, summary)
    ingest.run(progress or NoProgress(), expected)
    tagging = time.monotonic()
    summary.tagged = writer.tag_pending(load_encoder, known=ingest.known)
    summary.tag_seconds = time.monotonic() - tagging
    if summary.tagged:
        summary.stages["tag"] = StageTiming(summary.tag_seconds, summary.tagged)
    summary.seconds = time.monotonic() - started
    log.info(
        "indexed %d new, %d changed; %d moved, %d deleted, %d touched, %d unchanged, "
        "%d skipped in %.1f s",
        summary.new, summary.changed, summary.moved, summary.deleted, summary.touched,
        summary.unchanged, len(summary.skipped), summary.seconds,
    )  # fmt: skip
    return summary


def plan_size(plan: ChangePlan) -> int:
    """Files the scan looked at and sorted into the plan."""
    lists = (plan.new, plan.changed, plan.unchanged, plan.touched, plan.moved)
    return sum(len(entries) for entries in lists)


def selected_sources(kinds: Iterable[str] | None) -> dict[str, SourceSpec]:
    """Registered extensions of the wanted asset kinds, with their readers."""
    wanted = None if kinds is None else frozenset(kinds)
    return {e: s for e, s in SOURCES.items() if wanted is None or s.asset_kind in wanted}


def known_assets(catalog: Catalog) -> dict[str, KnownAsset]:
    """Every asset's (size, mtime, hash): the scan scopes it to the roots and extensions itself."""
    return {
        path: KnownAsset(s.size, s.mtime_ns, s.content_hash)
        for path, s in catalog.all_asset_states().items()
    }


def set_aside_companion_subtitles(plan: ChangePlan) -> None:
    """Drop .srt/.vtt files that belong to a video or recording: they are read with it, quietly.

    One indexed on its own earlier (before its media file appeared) is removed from the catalog.
    """

    def companion(path: Path | str) -> bool:
        return (
            Path(path).suffix.lower() in SUBTITLE_EXTENSIONS
            and media_for_subtitles(path) is not None
        )

    for name in ("new", "changed", "unchanged", "touched"):
        entries: list[FileEntry] = getattr(plan, name)
        keep = [e for e in entries if not companion(e.path)]
        if len(keep) < len(entries):
            setattr(plan, name, keep)
            if name != "new":  # known: drop its stand-alone passages
                plan.deleted.extend(str(e.path) for e in entries if companion(e.path))
    moves = [(old, e, companion(e.path)) for old, e in plan.moved]
    plan.moved = [(old, e) for old, e, drop in moves if not drop]
    plan.deleted.extend(old for old, _e, drop in moves if drop)


OCR_META_KEY = "ocr"
"""The ``meta`` row remembering whether the collection reads words in pictures ("on"/"off")."""


def ocr_choice(asked: bool | None, writer: CollectionWriter) -> bool:
    """`--ocr/--no-ocr` when given (and remembered), else the collection's last choice (off).
    Turning it on checks Tesseract and its language data first, so no picture is read without."""
    catalog = writer.catalog
    chosen = catalog.get_meta(OCR_META_KEY) == "on" if asked is None else asked
    if chosen:
        from indexer.sources.ocr import OcrOptions, check_languages

        check_languages(OcrOptions().languages)
    if asked is not None:
        catalog.set_meta(OCR_META_KEY, "on" if asked else "off")
    return chosen


def add_pictures_missing_ocr(plan: ChangePlan, catalog: Catalog) -> None:
    """Unchanged pictures whose words were never read are read (and encoded) again."""
    missing = catalog.image_paths_without_ocr()
    again = [e for e in plan.unchanged if str(e.path) in missing]
    if again:
        log.info("%d pictures are read again for the words in them", len(again))
        plan.unchanged = [e for e in plan.unchanged if str(e.path) not in missing]
        plan.changed.extend(again)


def add_pictures_missing_patches(plan: ChangePlan, catalog: Catalog) -> None:
    """Unchanged files whose pictures were stored without patch features are encoded again."""
    missing = catalog.paths_missing_patches()
    if not missing:
        return
    again = [e for e in plan.unchanged if str(e.path) in missing]
    if again:
        log.info("%d files are encoded again to store their patch features", len(again))
        plan.unchanged = [e for e in plan.unchanged if str(e.path) not in missing]
        plan.changed.extend(again)


class _Folders:
    """Registers the roots and tells which registered folder a file belongs to."""

    def __init__(self, catalog: Catalog, roots: Sequence[Path | str]) -> None:
        for root in roots:
            path = resolve_root(root)
            if path.is_dir():
                catalog.add_folder(path)
        # longest first, so a file belongs to the deepest registered folder holding it
        self._folders = sorted(catalog.list_folders(), key=lambda f: len(f.path), reverse=True)

    def id_for(self, key: str) -> int | None:
        return next((f.id for f in self._folders if is_under(key, [f.path])), None)


class _Changes:
    """The run's side of the collection writer: counts what changed and flushes on schedule."""

    def __init__(self, writer: CollectionWriter, save_every_s: float, summary: IndexSummary) -> None:
        self.writer, self.catalog = writer, writer.catalog
        self.save_every_s = save_every_s
        self.summary = summary

    def upsert(self, batch: list[tuple[AssetInfo, list[ItemData]]]) -> None:
        """Commit files in one transaction: all of them or none."""
        results = self.writer.write_many(batch)
        self.summary.items_added += sum(len(items) for _asset, items in batch)
        self.summary.items_removed += sum(len(r.replaced_ids) for r in results)

    def delete(self, keys: Sequence[str]) -> None:
        self.summary.items_removed += len(self.writer.delete(keys))

    def maybe_save(self) -> None:
        self.writer.maybe_flush(self.save_every_s)


def apply_cheap_changes(
    plan: ChangePlan, changes: _Changes, folders: _Folders, commit_every: int
) -> None:
    """Deleted, moved and touched files: catalog updates only, nothing is decoded or encoded."""
    summary, writer = changes.summary, changes.writer
    for start in range(0, len(plan.deleted), commit_every):
        changes.delete(plan.deleted[start : start + commit_every])
    summary.deleted += len(plan.deleted)
    for old, entry in plan.moved:  # keeps the asset's items, so its vectors and ids
        key = str(entry.path)
        writer.move(
            old, key, size=entry.size, mtime_ns=entry.mtime_ns, folder_id=folders.id_for(key)
        )
        summary.moved += 1
    for entry in plan.touched:
        key = str(entry.path)
        writer.touch(key, size=entry.size, mtime_ns=entry.mtime_ns)
        summary.touched += 1
    summary.unchanged += len(plan.unchanged)
    changes.maybe_save()


@dataclass
class _Batch:
    """Decoded files waiting for the encoder."""

    files: list[Decoded] = field(default_factory=list)
    pictures: int = 0
    texts: int = 0
    since: float = 0.0  # when the oldest file arrived

    def add(self, decoded: Decoded) -> None:
        if not self.files:
            self.since = time.monotonic()
        self.files.append(decoded)
        for item in decoded.items:
            if item.kind in PICTURE_KINDS:
                self.pictures += 1
            else:
                self.texts += 1

    def take(self) -> list[Decoded]:
        files, self.files, self.pictures, self.texts = self.files, [], 0, 0
        return files


class _Ingest:
    """Decode new and changed files, encode them in batches, commit them."""

    def __init__(
        self,
        plan: ChangePlan,
        sources: dict[str, SourceSpec],
        load_encoder: Callable[[], Encoder],
        options: IndexOptions,
        writer: _Changes,
        folders: _Folders,
        summary: IndexSummary,
    ) -> None:
        self.load_encoder, self.options, self.writer = load_encoder, options, writer
        self.folders, self.summary = folders, summary
        todo = sorted(plan.new + plan.changed, key=lambda e: str(e.path))
        self.entries = {str(e.path): e for e in todo}
        self.changed = {str(e.path) for e in plan.changed}
        self.jobs = [
            DecodeJob(key, spec.asset_kind, spec.reader, plan.hashes.get(key))
            for key in self.entries
            if (spec := sources.get(Path(key).suffix.lower())) is not None
        ]
        self.unavailable: dict[tuple[str, str], str] = {}  # (reader, extension) -> install hint
        self.batch = _Batch()
        self.started_ray = False  # this run started Ray here (it stops it at the end)
        self.known: KnownEncoder | None = None  # a Ray driver's encoder, not loaded

    def run(self, progress: ProgressReporter, expected: ExpectedEncoder | None = None) -> None:
        if not self.jobs:
            return  # nothing to decode: no model is loaded
        loading = time.monotonic()
        self.known = KnownEncoder.of(expected) if self.options.ray else None
        model = self._load_in_background() if self.options.ray and not self.known else None
        early: ProcessDecoder | RayDecoder | None = None
        try:
            early = self._early_decoder(expected)
            if self.known is not None:
                self.encoder: Encoder | KnownEncoder = self.known
            else:
                self.encoder = model.result() if model is not None else self.load_encoder()
            self.summary.stages["model load"] = StageTiming(time.monotonic() - loading)
            self.writer.writer.bind_encoder(
                self.encoder.name, self.encoder.dim, getattr(self.encoder, "weights_id", None)
            )
            self.store_patches = self._stores_patches(self.encoder.name)
            self.batch_size = encoder_batch(self.encoder.device, self.options.batch_size)
            decoder = self.decoder = self._decoder(early)
        except BaseException:
            if early is not None:
                early.close()
            raise
        self.progress = progress
        progress.start(len(self.jobs), "Indexing")
        try:
            with decoder:
                outcomes = decoder.outcomes() if decoder is early else decoder.run(self._pending_jobs())
                for outcome in outcomes:
                    self._take(outcome)
                self._flush()
        finally:
            progress.finish()

    def _load_in_background(self) -> Future[Encoder]:
        """The driver's model, loading in a thread while Ray starts (and its actors load theirs)."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="mmsearch-load")
        model = pool.submit(self.load_encoder)
        pool.shutdown(wait=False)
        return model

    def _stores_patches(self, encoder_name: str) -> bool:
        if self.options.patches is not None:
            return self.options.patches
        return stores_patches_by_default(encoder_name)

    def _early_decoder(
        self, expected: ExpectedEncoder | None
    ) -> ProcessDecoder | RayDecoder | None:
        """Decoding that starts while the model loads (torch's import and the weights take
        seconds on one core), where the encoder's input is known beforehand: worker processes on
        all cores but one (left to the loading), or on Ray the whole run (its actors load their
        own model meanwhile)."""
        if self.options.ray and (expected is None or expected.preprocess is None):
            from indexer.ray_ingest import connect

            self.started_ray = connect(self.options.ray)  # while the model loads
            return None
        if expected is None or expected.preprocess is None or self.options.in_process:
            return None
        if not self.options.ray and may_decode_jpegs_on_device(
            self.options.jpeg_decoder, expected.device
        ):
            return None  # the JPEGs wait for the device rather than go to Pillow
        if self.options.ray:
            decoder = self._ray_decoder(expected.spec, expected.precision, expected.preprocess)
            try:
                decoder.__enter__()
                decoder.start(self._pending_jobs())
            except BaseException:
                decoder.close()
                raise
            return decoder
        workers = self.options.worker_count(len(self.jobs))
        process_decoder = ProcessDecoder(
            self.options.worker_config(expected.preprocess),
            max(1, workers - 1),
            self.options.lookahead_items,
        )
        process_decoder.start(self._pending_jobs())
        return process_decoder

    def _decoder(
        self, early: ProcessDecoder | RayDecoder | None = None
    ) -> InlineDecoder | ProcessDecoder | RayDecoder | BatchJpegDecoder:
        """The early decoder (a local one now with every worker and, beside a CPU encoder, lower
        priority) if it decodes for the model that loaded; else a new one."""
        on_cpu = self.encoder.device == "cpu"
        workers = self.options.worker_count(len(self.jobs))
        if early is not None:
            if early.config.preprocess == self.encoder.preprocess:
                if isinstance(early, ProcessDecoder):
                    self.summary.stage("decode").workers = workers
                    early.grow_to(workers)
                    if on_cpu:
                        early.lower_priority(DECODER_NICENESS)
                return early
            log.warning(
                "the model's input (%s) is not the one expected (%s); decoding again",
                self.encoder.preprocess, early.config.preprocess,
            )  # fmt: skip
            early.close()
        if self.options.ray:
            return self._ray_decoder(
                self.encoder.spec, self.encoder.requested_precision, self.encoder.preprocess
            )
        config = self.options.worker_config(
            self.encoder.preprocess, DECODER_NICENESS if on_cpu else 0
        )
        max_ahead = self.options.lookahead_items
        fallback: InlineDecoder | ProcessDecoder
        if self.options.in_process:
            fallback = InlineDecoder(config)
        else:
            self.summary.stage("decode").workers = workers
            log.debug("decoding %d files in %d worker processes", len(self.jobs), workers)
            fallback = ProcessDecoder(config, workers, max_ahead)
        if not decodes_jpegs_on_device(self.options.jpeg_decoder, self.encoder.device):
            return fallback
        from indexer.jpeg_batch import BatchJpegDecoder

        return BatchJpegDecoder(config, self.encoder.device, fallback, max_ahead)

    def _ray_decoder(
        self, spec: ModelSpec, precision: str, preprocess: ImagePreprocess
    ) -> RayDecoder:
        """Decoding and encoding on Ray (`--ray`); the decoders are niced beside a CPU encoder
        there as here."""
        from indexer.ray_ingest import RayDecoder

        return RayDecoder(
            self.options.ray or "auto",
            model=spec,
            precision=precision,
            config=self.options.worker_config(preprocess, DECODER_NICENESS),
            batch_size=self.options.batch_size,  # 0: chosen for the actors' device
            store_patches=self._stores_patches(spec.name),
            max_ahead=self.options.lookahead_items,
            started_here=self.started_ray,
            jpeg_decoder=self.options.jpeg_decoder,
        )

    def _pending_jobs(self) -> Iterator[DecodeJob | Failed]:
        """The jobs, except those of a kind whose package turned out to be missing."""
        for job in self.jobs:
            hint = self.unavailable.get((job.reader, job.extension))
            yield job if hint is None else Failed(job, hint, missing_dependency=True)

    def _take(self, outcome: Outcome | None) -> None:
        if outcome is not None:
            replay_logs(outcome.logs)
            if isinstance(outcome, Failed):
                self._skip(outcome)
            else:
                decoding = self.summary.stage("decode")
                decoding.seconds += outcome.seconds
                decoding.items += len(outcome.items)
                self.batch.add(outcome)
        b, o = self.batch, self.options
        full = b.pictures >= self.batch_size or b.texts >= self.batch_size
        due = b.files and time.monotonic() - b.since >= MAX_HOLD_S
        if full or due or len(b.files) >= o.commit_every:
            self._flush()

    def _skip(self, failed: Failed, advance: bool = True) -> None:
        key = failed.job.path
        if failed.missing_dependency:
            slot = (failed.job.reader, failed.job.extension)
            if slot not in self.unavailable:
                self.unavailable[slot] = failed.reason
                log.warning("skipping %s files: %s", failed.job.extension, failed.reason)
        else:
            log.info("skipped %s: %s", key, failed.reason)
        self.summary.skipped.append(SkippedFile(key, failed.reason))
        if key in self.changed:  # its old items describe bytes that are gone
            self.writer.delete([key])
        if advance:
            self.progress.advance()

    def _flush(self) -> None:
        files = self.batch.take()
        if not files:
            return
        encoding = time.monotonic()
        with self._decoding_paused():
            encoded = self._encode(files)
        committing = time.monotonic()
        self._commit(files, encoded)
        self.progress.advance(len(files))
        self.writer.maybe_save()
        here = sum(len(d.items) for d in files if not is_encoded(d))  # not by a Ray actor
        if here:
            self._time("encode", committing - encoding, here)
        remote = [d for d in files if is_encoded(d)]
        if remote:  # the actors' own time, summed over them
            self._time(
                "encode", sum(d.encode_seconds for d in remote), sum(len(d.items) for d in remote)
            )
        self._time("commit", time.monotonic() - committing, sum(len(d.items) for d in files))

    def _time(self, stage: str, seconds: float, items: int) -> None:
        timing = self.summary.stage(stage)
        timing.seconds += seconds
        timing.items += items

    def _decoding_paused(self) -> contextlib.AbstractContextManager[None]:
        """Decoders wait while a CPU encoder runs: both on the same cores slow each other down
        more than taking turns does."""
        if self.encoder.device != "cpu":
            return contextlib.nullcontext()
        return self.decoder.paused()

    def _encode(self, files: list[Decoded]) -> list[list[Encoded]]:
        """Each file's items' (vector, patches); files a Ray actor encoded keep theirs."""
        todo = [d for d in files if not is_encoded(d)]
        fresh = iter(
            encode_files(self._encoder_here(todo), todo, self.batch_size, self.store_patches)
        )
        return [
            [(it.vector, it.patches) for it in d.items] if is_encoded(d) else next(fresh)
            for d in files
        ]

    def _encoder_here(self, todo: list[Decoded]) -> Encoder:
        """The model, for files to encode in this process (none in a Ray run: its actors encode
        every file; a driver that did not load its model loads it now if one comes anyway)."""
        if isinstance(self.encoder, KnownEncoder) and todo:
            self.encoder = self.load_encoder()
        return self.encoder  # type: ignore[return-value]

    def _commit(
        self, files: list[Decoded], encoded: list[list[tuple[np.ndarray, np.ndarray | None]]]
    ) -> None:
        """Commit a batch of files in one transaction; if one file's metadata is refused, commit
        them one by one so only that file is skipped."""
        batch = [(self._asset(d), self._items(d, e)) for d, e in zip(files, encoded, strict=True)]
        try:
            self.writer.upsert(batch)
        except (ValueError, TypeError, StatementError) as exc:
            if isinstance(exc, DBAPIError):  # the database itself failed: not a file's fault
                raise
            if len(batch) == 1:
                self._skip(Failed(files[0].job, f"cannot store its metadata: {exc}"), advance=False)
                return
            for decoded, one in zip(files, encoded, strict=True):
                self._commit([decoded], [one])
            return
        for decoded in files:
            self._count(decoded)

    def _asset(self, decoded: Decoded) -> AssetInfo:
        key = decoded.job.path
        entry = self.entries[key]
        meta = {k: v for k, v in decoded.meta.items() if k in _META_FIELDS}
        return AssetInfo(
            path=key,
            kind=decoded.job.asset_kind,
            size=entry.size,  # as scanned: if the file changes after the scan, the next run sees it
            mtime_ns=entry.mtime_ns,
            content_hash=decoded.content_hash,
            folder_id=self.folders.id_for(key),
            **meta,
        )

    @staticmethod
    def _items(
        decoded: Decoded, encoded: list[tuple[np.ndarray, np.ndarray | None]]
    ) -> list[ItemData]:
        return [
            ItemData(it.kind, it.start_s, it.end_s, it.text, vec, it.thumbnail, patches=patches)
            for it, (vec, patches) in zip(decoded.items, encoded, strict=True)
        ]

    def _count(self, decoded: Decoded) -> None:
        key = decoded.job.path
        if key in self.changed:
            self.summary.changed += 1
        else:
            self.summary.new += 1
        if decoded.meta.get("ocr_engine"):
            self.summary.ocr_pictures += 1
            self.summary.ocr_seconds += float(decoded.meta.get("ocr_seconds", 0.0))
        if decoded.meta.get("truncated"):  # a reader left part of the file out (a limit)
            self.summary.truncated.append(TruncatedFile(key, str(decoded.meta["truncated"])))
        kind = decoded.job.asset_kind
        self.summary.per_kind[kind] = self.summary.per_kind.get(kind, 0) + 1
        self.summary.device_decoded += decoded.on_device


__all__ = [
    "IndexOptions",
    "IndexSummary",
    "ProgressReporter",
    "SkippedFile",
    "run_index",
]

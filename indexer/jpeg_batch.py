"""JPEGs decoded in batches on the encoder's device (nvjpeg on a GPU), letterboxed there, and
handed to the encoder without leaving the device.

    with BatchJpegDecoder(config, "cuda", fallback=ProcessDecoder(config, 8, 1024)) as decoder:
        for outcome in decoder.run(jobs): ...

On a GPU, decoding in worker processes (Pillow) tops out near the CPU's cores while the encoder
could take thousands of pictures a second; nvjpeg decodes them on the card. The way of a JPEG:

1. a reader thread reads the file, checks it against the limits, hashes its bytes and reads its
   EXIF metadata and orientation from the header (`read_jpeg_file`); a few files ahead;
2. this module's thread decodes a batch of them in one `decode_jpeg` call, on its own CUDA
   stream so it overlaps the encoder's forward pass, turns each by its EXIF orientation (unless
   the decoder did: `JpegBackend.turns_by_exif`) and letterboxes them
   (`ImagePreprocess.fit_tensors`);
3. the pictures, (H, W, 3) uint8 views of one device tensor, wait in the outbox for the encoder
   (`stack_uint8` makes its batch of them there).

A batch the device refuses is decoded again file by file, and a file the device still refuses
(or one whose colours it cannot take: CMYK) is decoded by Pillow here, with the usual reasons for
a bad file. Every other file (PNG, video, text, a picture named .jpg that is not one) goes to the
`fallback` decoder, the worker processes, at the same time. With `device="cpu"` the same code runs
on libjpeg: that is how CI tests it; it is not faster than Pillow's draft decoding on a CPU.

The decoding itself is TorchCodec's `decode_jpeg` (`jpeg_backend`), the successor of
torchvision's, which torchvision 0.29 deprecates; where TorchCodec cannot decode on the device
(missing, not loading, a CPU-only build), torchvision's, the same call (same pixels, same errors
on the CPU; measured 2026-12-03); where neither can, the JPEGs go to `fallback` with the rest.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from indexer.hashing import bytes_hash
from indexer.sources.base import ASSET_IMAGE, IMAGE
from indexer.sources.image import JpegHeader, read_jpeg_file
from indexer.workers import (
    Decoded,
    DecodedItem,
    DecodeJob,
    Done,
    Failed,
    InlineDecoder,
    Outbox,
    Outcome,
    ProcessDecoder,
    WorkerConfig,
    decode,
    handed_over,
    short_reason,
)
from mmsearch.errors import DecodeError
from mmsearch.paths import key_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
IMAGE_READER = "indexer.sources.image:read_image"
BATCH_FILES = 64
"""JPEGs per `decode_jpeg` call at most."""
BATCH_PIXELS = 200_000_000
"""Stored pixels per call at most: 64 photos of 24 megapixels would be 4.6 GB decoded."""
READ_AHEAD = 2 * BATCH_FILES  # files read (bytes, header, hash) ahead of the decoding
READER_THREADS = 4
DEVICE_MODES = frozenset({"RGB", "L"})  # colour modes decoded on the device; others by Pillow
_PUT_WAIT_S = 0.5


def takes(job: DecodeJob | Failed, config: WorkerConfig) -> bool:
    """Whether a job is one this decoder decodes itself: a picture named as a JPEG, read by the
    built-in reader, in a run that reads no words in pictures (OCR reads the file itself)."""
    return (
        isinstance(job, DecodeJob)
        and job.asset_kind == ASSET_IMAGE
        and job.reader == IMAGE_READER
        and job.extension in JPEG_EXTENSIONS
        and not config.ocr.enabled
    )


def split_jobs(
    jobs: Iterable[DecodeJob | Failed], config: WorkerConfig
) -> tuple[list[DecodeJob], list[DecodeJob | Failed]]:
    """(the jobs this decoder `takes`, the others), each in the order given."""
    mine: list[DecodeJob] = []
    others: list[DecodeJob | Failed] = []
    for job in jobs:
        if takes(job, config):
            mine.append(job)  # type: ignore[arg-type]
        else:
            others.append(job)
    return mine, others


@dataclass
class _Read:
    """A JPEG read and checked, waiting for its batch."""

    job: DecodeJob
    data: bytearray
    header: JpegHeader
    digest: str
    seconds: float


class BatchJpegDecoder:
    """Decodes JPEGs in batches on `device` and everything else through `fallback`; at most about
    `max_ahead` items are decoded ahead of use (as `ProcessDecoder`)."""

    def __init__(
        self,
        config: WorkerConfig,
        device: str,
        fallback: ProcessDecoder | InlineDecoder,
        max_ahead: int,
        batch_files: int = BATCH_FILES,
    ) -> None:
        self.config, self.device, self.fallback = config, device, fallback
        self.batch_files = max(1, batch_files)
        self._out = Outbox(max_ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_device = 0  # JPEGs the device decoded
        self.by_pillow = 0  # JPEGs it refused, decoded by Pillow here
        self.backend = jpeg_backend(str(device))
        if self.backend is None:
            log.warning("no JPEG decoder works on %s here; JPEGs are decoded by Pillow", device)

    def __enter__(self) -> BatchJpegDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: Iterable[DecodeJob | Failed]) -> Iterator[Outcome | None]:
        """Outcomes as files finish (any order); None while waiting, as `ProcessDecoder.run`.
        The jobs are listed at once (they are small) to split them between the two decoders."""
        mine, others = split_jobs(jobs, self.config) if self.backend else ([], list(jobs))
        log.debug(
            "%d JPEGs decoded on %s, %d other files in workers", len(mine), self.device, len(others)
        )
        self._thread = threading.Thread(
            target=self._work, args=(mine, others), name="mmsearch-jpeg-batch", daemon=True
        )
        self._thread.start()
        return handed_over(self._out.get)

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """The workers wait while a CPU encoder runs; the device decoder needs no cores."""
        return self.fallback.paused()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if isinstance(self.fallback, ProcessDecoder):
            self.fallback.close()

    # ---- the decoding thread -----------------------------------------------------------------

    def _work(self, mine: list[DecodeJob], others: list[DecodeJob | Failed]) -> None:
        failure: list[BaseException] = []
        rest = threading.Thread(
            target=self._relay, args=(others, failure), name="mmsearch-jpeg-rest", daemon=True
        )
        try:
            if others:
                rest.start()
            self._decode_all(mine)
            if others:
                rest.join()
            self._put(failure[0] if failure else Done())
        except BaseException as exc:  # handed to the consumer, which raises it
            self._stop.set()
            self._put(exc)

    def _relay(self, jobs: list[DecodeJob | Failed], failure: list[BaseException]) -> None:
        """The fallback decoder's outcomes, into the same outbox."""
        try:
            for outcome in self.fallback.run(jobs):
                if self._stop.is_set() or (outcome is not None and not self._put(outcome)):
                    return
        except BaseException as exc:
            failure.append(exc)

    def _put(self, item: Any) -> bool:
        """Into the outbox, waiting for room; False once the decoder is closing."""
        while not self._out.put(item, _PUT_WAIT_S):
            if self._stop.is_set():
                return False
        return True

    def _decode_all(self, jobs: list[DecodeJob]) -> None:
        import torch

        stream = (
            torch.cuda.Stream(self.device) if torch.device(self.device).type == "cuda" else None
        )
        batch: list[_Read] = []
        pixels = 0
        with ThreadPoolExecutor(READER_THREADS, thread_name_prefix="mmsearch-jpeg-read") as pool:
            for read in self._read_ahead(pool, jobs):
                if self._stop.is_set():
                    return
                if isinstance(read, DecodeJob | Failed):  # not for the device after all
                    self._deliver(read if isinstance(read, Failed) else self._by_pillow(read))
                    continue
                size = read.header.meta["width"] * read.header.meta["height"]
                if batch and (len(batch) >= self.batch_files or pixels + size > BATCH_PIXELS):
                    self._decode_batch(batch, stream)
                    batch, pixels = [], 0
                batch.append(read)
                pixels += size
            if batch:
                self._decode_batch(batch, stream)

    def _read_ahead(
        self, pool: ThreadPoolExecutor, jobs: list[DecodeJob]
    ) -> Iterator[_Read | DecodeJob | Failed]:
        """The jobs read in `pool`, in order, `READ_AHEAD` files ahead."""
        pending: deque[Future[_Read | DecodeJob | Failed]] = deque()
        for job in jobs:
            pending.append(pool.submit(self._read, job))
            if len(pending) >= READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _read(self, job: DecodeJob) -> _Read | DecodeJob | Failed:
        """Bytes, header and hash of one file; the job itself when Pillow should decode it."""
        started = time.perf_counter()
        path = key_path(job.path)
        try:
            data, header = read_jpeg_file(path, self.config.image_limits)
            if header is None or header.mode not in DEVICE_MODES:
                return job
            digest = job.content_hash or bytes_hash(data)
        except DecodeError as exc:
            return Failed(job, short_reason(exc, path))
        except OSError as exc:
            return Failed(job, f"cannot read: {exc.strerror or exc}")
        except Exception as exc:  # an unforeseen header: Pillow's path decides, with its reasons
            log.debug("%s: header not read for the device (%s)", path, exc)
            return job
        return _Read(job, data, header, digest, time.perf_counter() - started)

    def _decode_batch(self, batch: list[_Read], stream: torch.cuda.Stream | None) -> None:
        started = time.perf_counter()
        with _on_stream(stream):
            images = self._decode_on_device(batch)
            done = [(read, img) for read, img in zip(batch, images, strict=True) if img is not None]
            if done:
                if self.backend is not None and self.backend.turns_by_exif:  # done already
                    oriented = [img for _read, img in done]
                else:
                    oriented = [_orient(img, read.header.orientation) for read, img in done]
                fitted = self.config.preprocess.fit_tensors(oriented)
        if stream is not None:
            stream.synchronize()  # the encoder's stream reads them next
        share = (time.perf_counter() - started) / len(batch)
        for i, (read, _img) in enumerate(done):
            item = DecodedItem(IMAGE, pixels=fitted[i])
            meta = dict(read.header.meta)
            seconds = read.seconds + share
            self._deliver(
                Decoded(read.job, read.digest, meta, [item], seconds=seconds, on_device=True)
            )
        self.on_device += len(done)
        for read, img in zip(batch, images, strict=True):
            if img is None:
                self._deliver(self._by_pillow(read.job))

    def _decode_on_device(self, batch: list[_Read]) -> list[torch.Tensor | None]:
        """One call for the batch; file by file if it fails (nvjpeg gives no partial results),
        None for each file the device cannot decode."""
        import torch

        assert self.backend is not None, "no JPEG goes to the device without a backend"
        decode_jpeg = self.backend.decode
        encoded = [torch.frombuffer(read.data, dtype=torch.uint8) for read in batch]
        try:
            return list(decode_jpeg(encoded, self.device))
        except RuntimeError as exc:
            if len(batch) == 1:
                log.debug("%s: not decoded on %s: %s", batch[0].job.path, self.device, exc)
                return [None]
        out: list[torch.Tensor | None] = []
        for read, one in zip(batch, encoded, strict=True):
            try:
                out.append(decode_jpeg([one], self.device)[0])
            except RuntimeError as exc:
                log.debug("%s: not decoded on %s: %s", read.job.path, self.device, exc)
                out.append(None)
        return out

    def _by_pillow(self, job: DecodeJob) -> Outcome:
        self.by_pillow += 1
        return decode(job, self.config)

    def _deliver(self, outcome: Outcome) -> None:
        if not self._put(outcome):
            raise _Closing


@dataclass(frozen=True)
class JpegBackend:
    """Who decodes on a device: `decode(encoded, device)` takes a list of 1-D uint8 CPU tensors
    and gives (3, H, W) uint8 RGB tensors on it, raising RuntimeError for what it cannot decode.
    `turns_by_exif`: its pictures come out turned by their EXIF orientation (TorchCodec's do on
    the CPU, torchvision's never), found out on the device, not assumed for a GPU untried."""

    name: str  # "torchcodec" or "torchvision"
    decode: Callable[[list[torch.Tensor], str], list[torch.Tensor]]
    turns_by_exif: bool


@functools.cache
def jpeg_backend(device: str) -> JpegBackend | None:
    """The first decoder that decodes a probe on `device` (a 16x8 JPEG whose EXIF says "turn 90
    degrees"): TorchCodec's, else torchvision's; None when neither can (a CPU-only build on a
    GPU, a library that does not load): then JPEGs go to Pillow like other pictures."""
    import torch

    probe = torch.frombuffer(bytearray(_turned_probe()), dtype=torch.uint8)
    for name, load in (("torchcodec", _torchcodec_decode), ("torchvision", lambda: _torchvision_decode)):
        try:
            decode = load()
            turned = tuple(decode([probe], device)[0].shape) == (3, 16, 8)
        except Exception as exc:  # ImportError, or RuntimeError/OSError from native libraries
            log.info("%s does not decode JPEGs on %s here: %s", name, device, exc)
            continue
        log.debug("JPEGs on %s are decoded by %s (turned by it: %s)", device, name, turned)
        return JpegBackend(name, decode, turns_by_exif=turned)
    return None


def _torchcodec_decode() -> Callable[[list[torch.Tensor], str], list[torch.Tensor]]:
    from torchcodec.decoders import decode_jpeg

    return lambda encoded, device: decode_jpeg(encoded, mode="RGB", device=device)


def _turned_probe() -> bytes:
    """A 16x8 JPEG whose EXIF orientation (6) turns it to 8x16."""
    import io

    from PIL import Image

    picture = Image.new("RGB", (16, 8), (200, 30, 30))
    exif = picture.getexif()
    exif[0x0112] = 6
    out = io.BytesIO()
    picture.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _torchvision_decode(encoded: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


class _Closing(Exception):
    """The consumer closed the decoder while it was handing over outcomes."""


def _on_stream(stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager[Any]:
    if stream is None:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(stream)


def _orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (3, h, w) picture turned as its EXIF orientation says (Pillow's `exif_transpose`)."""
    if orientation == 2:
        return image.flip(2)  # mirrored left-right
    if orientation == 3:
        return image.flip((1, 2))  # upside down
    if orientation == 4:
        return image.flip(1)  # mirrored top-bottom
    if orientation == 5:
        return image.transpose(1, 2)  # transposed
    if orientation == 6:
        return image.transpose(1, 2).flip(2)  # a quarter turn clockwise
    if orientation == 7:
        return image.transpose(1, 2).flip((1, 2))  # transversed
    if orientation == 8:
        return image.transpose(1, 2).flip(1)  # a quarter turn anticlockwise
    return image

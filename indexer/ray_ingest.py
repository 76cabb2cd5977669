"""Decoding and encoding on a Ray cluster (`mmsearch index --ray auto|ADDRESS`).

The files to index become a Ray Data dataset. On a cluster with GPUs it flows through two pools
of actors, as the plain pipeline's decoding processes feed its encoder: `DecodeActor`s decode
each batch in a worker process of their own (`ProcessDecoder`, so a decoder that crashes costs
that file, as in a plain run) on the CPUs, and `EncodeActor`s, one per GPU, encode the pictures
and passages; Ray Data streams batches between them, so the next batch is decoded while this one
is encoded. JPEGs (unless `jpeg_decoder` is "pillow") skip the decoding actors: the encoding
actors decode them on their GPU (`indexer.jpeg_batch`), as a plain run on a GPU does. On a
CPU-only cluster one pool of `IngestActor`s, one per CPU, does both in turn: each decodes a
batch in a worker process, then encodes it with one torch thread, so the actors of a node
overlap one another's decoding and encoding (`CPUS_PER_ACTOR`).
Either way each file comes back as a `Decoded` whose items carry their vectors, and the driver
alone commits, through the collection's one writer, exactly as for a plain run: incremental,
crash safe, bad files skipped and reported.

`RayDecoder.start` begins the dataset at once, so the actors load their model while the driver
loads its own copy (which binds the collection and embeds the tag vocabulary). Where an earlier
run traced the image tower on this CPU, the driver loads nothing: it binds the collection and
tags from the trace's record and the cached tag vectors (`pipeline.KnownEncoder`).

Ray Data restarts an actor that dies and runs its batch again (its defaults for actor pools:
``max_restarts=-1``, ``max_task_retries=-1``); a file that comes back twice is committed once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from indexer.workers import (
    TICK_S,
    Decoded,
    DecodeJob,
    Done,
    Failed,
    Outcome,
    ProcessDecoder,
    WorkerConfig,
    handed_over,
)
from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.models.registry import ModelSpec

if TYPE_CHECKING:
    from indexer.jpeg_batch import BatchJpegDecoder

log = logging.getLogger(__name__)

CPUS_PER_ACTOR = 1
"""CPUs an actor asks for on a CPU-only cluster (its decoding process, then its torch thread).
One: on the 2-core Xeon two single-threaded actors indexed 5,000 JPEGs in 48.0-49.6 s against
53.5-56.7 s for one actor with two threads (alternating runs, 2026-12-03): each takes its turns
on its own core, so one decodes while the other encodes, and no forward pass waits on a second
thread that Ray's other processes or the driver have interrupted. Each actor holds a copy of
the model (ViT-B-32 in bf16: ~180 MB of weights)."""

LOST = "no result came back from the Ray cluster (indexed by the next run)"
"""The reason given for a file the cluster's results never mentioned."""

QUIET_LOGGERS = (
    "ray._private.authentication.authentication_token_setup",
    "ray.data._internal.progress",
)
"""Ray's loggers that `connect` sets to ERROR unless the run logs at INFO (`mmsearch -v`)."""

PROBE_TIMEOUT_S = 5.0
"""How long `connect` waits for a cluster's port to answer before saying it cannot be reached."""
GCS_PORT = 6379  # Ray's default for an address without a port

CLIENT_PREFIX = "ray://"
"""Ray Client addresses: refused, since Ray Data's streaming executor needs the driver's own core
worker, which a Ray Client connection does not have (Ray 2.60: ``AttributeError: 'Worker' object
has no attribute 'core_worker'`` as the run starts; tried against `ray start --head`)."""

LOCAL = "local"
"""`--ray local`: start a Ray instance on this machine for the run (and stop it after)."""
NO_CLUSTER_HINT = "Start one with `ray start --head`, give its address, or use --ray local."


@dataclass(frozen=True)
class RayPlan:
    """How the run uses the cluster: actors, what each asks for, where the model runs.

    `decoders` is 0 on a CPU-only cluster: each encoding actor then decodes its batches too."""

    actors: int  # encoding actors
    cpus_per_actor: float
    gpus_per_actor: float
    device: str  # the encoding actors' torch device
    decoders: int = 0  # decoding actors (each with one decoding process); 0: the actors decode
    cpus_per_decoder: float = 1.0

    @property
    def threads(self) -> int:
        """Torch threads of an encoding actor (on a CPU-only cluster also its decoding processes)."""
        return max(1, int(self.cpus_per_actor))

    def describe(self) -> str:
        if self.gpus_per_actor:
            return f"{self.actors} encoding actor(s) with {self.gpus_per_actor:g} GPU each, {self.decoders} decoding actor(s)"
        return f"{self.actors} actor(s) decoding and encoding in turn on {self.cpus_per_actor:g} CPUs each"


def plan_for(resources: dict[str, float], device: str = "auto") -> RayPlan:
    """Actors for the cluster's resources: one encoder per GPU with the other CPUs decoding, else
    one actor per `CPUS_PER_ACTOR` CPUs that decodes and encodes in turn."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus and device != "cpu":
        return RayPlan(
            actors=gpus, cpus_per_actor=1, gpus_per_actor=1, device="cuda",
            decoders=max(1, cpus - gpus), cpus_per_decoder=1,
        )  # fmt: skip
    if device.startswith("cuda"):
        raise ConfigError(f"--device {device} was asked for, but the Ray cluster has no GPU.")
    each = min(CPUS_PER_ACTOR, cpus)
    return RayPlan(actors=max(1, cpus // each), cpus_per_actor=each, gpus_per_actor=0, device="cpu")


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "Indexing on Ray needs Ray Data: pip install 'mmsearch[ray]' (or 'ray[data]')."
        ) from exc
    return ray


def connect(address: str) -> bool:
    """Join (or, for "local", start) the Ray cluster; True when this call started Ray here.

    Unless this process logs at INFO (`mmsearch -v`), Ray's Python chatter stays off the
    terminal: its INFO lines, its notice that the cluster uses token authentication, and Ray
    Data's that progress bars are off (the run has its own). Errors reach the user as exceptions."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    verbose = log.isEnabledFor(logging.INFO)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    options = {"log_to_driver": False, "logging_level": logging.INFO if verbose else logging.WARNING}
    if address != LOCAL:
        target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
        if target.startswith(CLIENT_PREFIX):
            raise ConfigError(
                f"--ray {target} is a Ray Client address, and Ray Data (Ray {ray.__version__}) does not "
                "run over Ray Client. Run `mmsearch index` on a machine of the cluster: join it "
                "with `ray start --address=HEAD:6379`, then use --ray auto (or submit the command "
                "with `ray job submit`)."
            )
        _check_reachable(target)
    try:
        if address == LOCAL:  # a new instance even where one runs (`ray start`, RAY_ADDRESS)
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=None if address == "auto" else address, **options)
    except ConnectionError as exc:
        if _refused_for_token(exc):
            raise ConfigError(
                f"The Ray cluster at {address!r} wants its authentication token: set "
                "RAY_AUTH_MODE=token, with the token in ~/.ray/auth_token, $RAY_AUTH_TOKEN_PATH or "
                "$RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it). --ray auto finds "
                "it for a cluster started on this machine."
            ) from exc
        raise ConfigError(f"Cannot reach a Ray cluster at {address!r}: {exc}. {NO_CLUSTER_HINT}") from exc
    return True


def _host_and_port(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, or a host alone (a bare IPv6 address too: Ray's port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") or str(GCS_PORT)
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, str(GCS_PORT)
    if not host or not port.isdigit():
        raise ConfigError(f"Not a Ray cluster address: {address!r}; give HOST:PORT (e.g. head.example:6379).")
    return host, int(port)


def _refused_for_token(exc: BaseException) -> bool:
    """Whether Ray's connection error comes from the cluster's token authentication (Ray 2.59+
    turns it on for clusters started with `ray start`; a driver given an explicit address does
    not send the token unless RAY_AUTH_MODE=token, and Ray's message hides why)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_reachable(address: str) -> None:
    """ConfigError at once for a cluster address (`HOST:PORT`) nothing answers at: Ray itself
    retries it for minutes, printing its retries."""
    if address in ("", "auto", LOCAL):  # "auto" with no $RAY_ADDRESS: Ray looks on this machine
        return
    host, port = _host_and_port(address)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"Cannot reach a Ray cluster at {address!r} ({host}:{port}: {exc}). {NO_CLUSTER_HINT}"
        ) from None


def _batches(batch: dict[str, Any]) -> list[list[Any]]:
    """The lists a Ray Data batch holds: each row is one pickled list of jobs or outcomes."""
    return [pickle.loads(blob) for blob in batch["batch"]]


def _rows(lists: list[list[Any]]) -> dict[str, list[bytes]]:
    return {"batch": [pickle.dumps(one) for one in lists]}


class DecodeActor:
    """Decodes one batch of files per call in a worker process of its own (runs in Ray)."""

    def __init__(self, config: WorkerConfig, batch_size: int) -> None:
        self.decoder = ProcessDecoder(config, workers=1, max_ahead=4 * batch_size)
        self.decoder.prestart()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        return _rows([decode_all(self.decoder, jobs) for jobs in _batches(batch)])


def decode_all(decoder: ProcessDecoder | BatchJpegDecoder, jobs: list[DecodeJob]) -> list[Outcome]:
    """Each job's outcome, in order; the decoder's workers stay up from one call to the next."""
    outcomes = {o.job.path: o for o in decoder.run(jobs) if o is not None}
    return [outcomes[job.path] for job in jobs]


class EncodeActor:
    """Holds the encoder; encodes one batch of decoded files per call (runs in Ray)."""

    def __init__(
        self,
        model: ModelSpec,
        device: str,
        precision: str,
        threads: int,
        batch_size: int,
        store_patches: bool,
        jpeg_config: WorkerConfig | None = None,
    ) -> None:
        import torch

        from mmsearch.models import Encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder(model, device=device, precision=precision).load_image_tower()
        self.batch_size, self.store_patches = batch_size, store_patches
        self.jpeg_config = jpeg_config  # set: rows of JPEG jobs come here to decode on the device

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        return _rows([self.encode(self._decoded(row)) for row in _batches(batch)])

    def _decoded(self, row: list[Any]) -> list[Outcome]:
        """A row of outcomes from a decoding actor as it is; a row of JPEG jobs decoded here, on
        the encoder's device (`BatchJpegDecoder`: nvjpeg on a GPU, Pillow for what it refuses)."""
        if not row or not isinstance(row[0], DecodeJob):
            return row
        from indexer.jpeg_batch import BatchJpegDecoder
        from indexer.workers import InlineDecoder

        config = self.jpeg_config
        if config is None:
            raise ConfigError("this encoding actor was given files but decodes none itself")
        with BatchJpegDecoder(config, self.encoder.device, InlineDecoder(config), len(row)) as d:
            return decode_all(d, row)

    def encode(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes, each decoded file's items with their vectors (and patches)."""
        from indexer.encoding import encode_files

        decoded = [o for o in outcomes if isinstance(o, Decoded)]
        started = time.perf_counter()
        vectors = encode_files(self.encoder, decoded, self.batch_size, self.store_patches)
        per_item = (time.perf_counter() - started) / max(1, sum(len(d.items) for d in decoded))
        for d, encoded in zip(decoded, vectors, strict=True):
            d.encode_seconds = per_item * len(d.items)  # the run's "encode" stage
            for item, (vector, patches) in zip(d.items, encoded, strict=True):
                item.vector, item.patches, item.pixels = vector, patches, None
        return outcomes


class IngestActor(EncodeActor):
    """Decodes a batch of files in worker processes on all its CPUs, then encodes it with all of
    them: the plain run's turns, in one actor (runs in Ray, on a CPU-only cluster)."""

    def __init__(
        self, config: WorkerConfig, model: ModelSpec, device: str, precision: str, threads: int,
        batch_size: int, store_patches: bool,
    ) -> None:  # fmt: skip
        self.decoder = ProcessDecoder(config, workers=threads, max_ahead=batch_size + 2 * threads)
        self.decoder.prestart()  # its processes import while the model loads
        super().__init__(model, device, precision, threads, batch_size, store_patches)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        return _rows([self.encode(decode_all(self.decoder, jobs)) for jobs in _batches(batch)])


class RayDecoder:
    """A decoder for `run_index` whose outcomes come back encoded from a Ray cluster.

    `address`: "auto" joins the running cluster (`RAY_ADDRESS`, or the one started on this
    machine with `ray start`) and starts one here when there is none, "local" always starts one
    here for the run, anything else is the address of a cluster this machine has joined
    (`HOST:6379`); Ray Client addresses (`ray://`) are refused (`CLIENT_PREFIX`).

    Like `ProcessDecoder`: `start` begins the run in the background (a thread pulls Ray's
    results, so the actors start and load their model while the driver does other work),
    `outcomes` yields them as they come, and None every `TICK_S` while waiting, so the driver
    commits on time; `run` does both. At most `max_ahead` files wait for the driver.
    `batch_size` 0 is chosen for the actors' device (`pipeline.encoder_batch`).
    """

    def __init__(
        self,
        address: str,
        *,
        model: ModelSpec,
        precision: str,
        config: WorkerConfig,
        device: str = "auto",
        batch_size: int,
        store_patches: bool,
        max_ahead: int = 1024,
        started_here: bool = False,
        plan: RayPlan | None = None,
        jpeg_decoder: str = "auto",
    ) -> None:
        self.address, self.model, self.device, self.precision = address, model, device, precision
        self.jpeg_decoder = jpeg_decoder  # as `IndexOptions.jpeg_decoder`, for the encoding actors
        self.config, self.batch_size, self.store_patches = config, batch_size, store_patches
        self.plan = plan  # None: `plan_for` the cluster's resources
        self._started_here = started_here  # the caller connected (`connect`), starting Ray
        self._out: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_ahead))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._entered = self._closed = False

    def __enter__(self) -> RayDecoder:
        if self._entered:  # an early run entered it before the driver's model loaded
            return self
        self._entered = True
        ray = import_ray()
        self._started_here = connect(self.address) or self._started_here
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the run has its own progress
        context.print_on_execution_start = False
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        self.plan = self.plan or plan_for(ray.cluster_resources(), self.device)
        from indexer.pipeline import encoder_batch

        self.batch_size = encoder_batch(self.plan.device, self.batch_size)
        log.info("indexing on Ray: %s", self.plan.describe())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Ray's tasks are scheduled by Ray; the driver's own encoding does not hold them back."""
        return contextlib.nullcontext()

    def run(self, jobs: Iterable[DecodeJob | Failed]) -> Iterator[Outcome | None]:
        self.start(jobs)
        return self.outcomes()

    def start(self, jobs: Iterable[DecodeJob | Failed]) -> None:
        """Begin the run: files that failed already are given back first, the rest go to Ray."""
        assert self.plan is not None, "use RayDecoder as a context manager"
        failed: list[Failed] = []
        todo: list[DecodeJob] = []
        for job in jobs:
            (failed if isinstance(job, Failed) else todo).append(job)
        dataset = self._dataset(todo) if todo else None
        self._thread = threading.Thread(
            target=self._collect, args=(failed, todo, dataset), name="mmsearch-ray-collector",
            daemon=True,
        )
        self._thread.start()

    def outcomes(self) -> Iterator[Outcome | None]:
        """What `start`ed gives, in the order Ray finishes it; a file coming back twice (a batch
        run again after an actor died) is given once; None while waiting."""
        seen: set[str] = set()
        for message in handed_over(lambda timeout: self._out.get(timeout=timeout)):
            if message is not None:
                if message.job.path in seen:
                    continue
                seen.add(message.job.path)
            yield message

    def close(self) -> None:
        """Stop pulling results (Ray Data stops the run's actors) and Ray, if started here."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * TICK_S)  # it may wait on Ray; it is a daemon
        if self._started_here:
            import_ray().shutdown()

    def _dataset(self, todo: list[DecodeJob]) -> Any:
        plan = self.plan
        assert plan is not None
        dataset = self._rows_of(todo)
        encoder_kwargs = {
            "model": self.model,
            "device": plan.device,
            "precision": self.precision,
            "threads": plan.threads,
            "batch_size": self.batch_size,
            "store_patches": self.store_patches,
        }
        if not plan.decoders:  # CPU-only: each actor decodes, then encodes, in turn
            return dataset.map_batches(
                IngestActor,
                fn_constructor_kwargs={"config": self.config, **encoder_kwargs},
                batch_size=1,
                compute=self._pool(plan.actors, len(todo)),
                num_cpus=plan.cpus_per_actor,
            )
        from indexer.jpeg_batch import split_jobs
        from indexer.pipeline import decodes_jpegs_on_device

        direct = None  # rows of JPEG jobs, decoded by the encoding actors on their device
        undecoded = len(todo)  # files for the decoding actors
        if decodes_jpegs_on_device(self.jpeg_decoder, plan.device):
            mine, others = split_jobs(todo, self.config)
            if mine:
                direct = self._rows_of(mine)
                encoder_kwargs["jpeg_config"] = self.config
                dataset = self._rows_of(others) if others else None
                undecoded = len(others)
        decoded = None
        if dataset is not None:
            decoded = dataset.map_batches(
                DecodeActor,
                fn_constructor_kwargs={"config": self.config, "batch_size": self.batch_size},
                batch_size=1,
                compute=self._pool(plan.decoders, undecoded),
                num_cpus=plan.cpus_per_decoder,
            )
        if direct is not None:
            decoded = direct if decoded is None else direct.union(decoded)
        return decoded.map_batches(
            EncodeActor,
            fn_constructor_kwargs=encoder_kwargs,
            batch_size=1,
            compute=self._pool(plan.actors, len(todo)),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor,
        )

    def _pool(self, actors: int, files: int) -> Any:
        """A pool of `actors`, or of one per row where the files fill fewer rows: an actor
        without a row would only load a model (and Ray Data warns of it)."""
        rows = -(-files // self.batch_size)
        return import_ray().data.ActorPoolStrategy(size=max(1, min(actors, rows)))

    def _rows_of(self, jobs: list[DecodeJob]) -> Any:
        """A dataset of one row per encoder batch, one block per row: each task is exactly one
        batch, and the driver hears of its files as soon as it is done."""
        batches = [jobs[i : i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        return import_ray().data.from_items(
            [{"batch": pickle.dumps(one)} for one in batches], override_num_blocks=len(batches)
        )

    def _collect(self, failed: list[Failed], todo: list[DecodeJob], dataset: Any) -> None:
        """The collector thread: the files that failed already, then Ray's results, into the
        queue (bounded: it waits for the consumer), then the end (or the error)."""
        try:
            for job in failed:
                if not self._put(job):
                    return
            if dataset is not None:
                waiting = {job.path: job for job in todo}
                for row in dataset.iter_rows():
                    for outcome in pickle.loads(row["batch"]):
                        waiting.pop(outcome.job.path, None)
                        if not self._put(outcome):
                            return  # closed: leaving the loop ends Ray Data's run
                for job in waiting.values():  # never silently: the next run would take it again
                    log.warning("no result came back from the Ray cluster for %s", job.path)
                    if not self._put(Failed(job, LOST)):
                        return
            self._put(Done())
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(item, timeout=TICK_S)
                return True
            except queue.Full:
                continue
        return False

"""Decoding and encoding on a Ray cluster (`mmsearch index --ray auto|ADDRESS`).

The files to index become a Ray Data dataset that flows through two pools of actors, as the
plain pipeline's decoding processes feed its encoder: `DecodeActor`s decode each batch in a
worker process of their own (`ProcessDecoder`, so a decoder that crashes costs that file, as in
a plain run), and `EncodeActor`s, which hold the encoder (one per GPU where the cluster has GPUs,
else one per few CPUs), encode the pictures and passages and send back each file as a `Decoded`
whose items carry their vectors. Ray Data streams batches between the two, so the next batch is
decoded while this one is encoded. The driver alone commits, through the
collection's one writer, exactly as for a plain run: incremental, crash safe, bad files skipped
and reported.

Ray Data restarts an actor that dies and runs its batch again (its defaults for actor pools:
``max_restarts=-1``, ``max_task_retries=-1``); a file that comes back twice is committed once.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from indexer.workers import Decoded, DecodeJob, Failed, Outcome, ProcessDecoder, WorkerConfig
from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.models.registry import ModelSpec

log = logging.getLogger(__name__)

CPUS_PER_ACTOR = 4
"""CPUs an encoding actor asks for on a CPU-only cluster (its torch threads), at most all."""

DECODER_CPUS = 0.5
"""CPUs a decoding actor asks for on a CPU-only cluster: its process decodes while the encoder
waits, and sleeps while the encoder runs; the pair together asks for the encoder's CPUs."""

LOCAL = "local"
"""`--ray local`: start a Ray instance on this machine for the run (and stop it after)."""


@dataclass(frozen=True)
class RayPlan:
    """How the run uses the cluster: actors, what each asks for, where the model runs."""

    actors: int  # encoding actors
    cpus_per_actor: float
    gpus_per_actor: float
    device: str  # the encoding actors' torch device
    decoders: int = 1  # decoding actors (each with one decoding process)
    cpus_per_decoder: float = DECODER_CPUS

    @property
    def threads(self) -> int:
        """Torch threads of an encoding actor: its CPUs and its decoder's share (on a CPU-only
        cluster the decoder is idle while the encoder waits for it, and the encoder's threads
        should not be fewer than the cores it effectively has)."""
        if self.gpus_per_actor:
            return max(1, int(self.cpus_per_actor))
        return max(1, round(self.cpus_per_actor + self.cpus_per_decoder * self.decoders / self.actors))

    def describe(self) -> str:
        each = f"{self.gpus_per_actor:g} GPU" if self.gpus_per_actor else f"{self.cpus_per_actor:g} CPUs"
        return f"{self.actors} encoding actor(s) with {each} each, {self.decoders} decoding actor(s)"


def plan_for(resources: dict[str, float], device: str = "auto") -> RayPlan:
    """Actors for the cluster's resources: one encoder per GPU with the other CPUs decoding, else
    one encoder per `CPUS_PER_ACTOR` CPUs, each beside a decoder that asks for `DECODER_CPUS`."""
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
    actors = max(1, cpus // each)
    return RayPlan(
        actors=actors, cpus_per_actor=each - DECODER_CPUS, gpus_per_actor=0, device="cpu",
        decoders=actors, cpus_per_decoder=DECODER_CPUS,
    )  # fmt: skip


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
    """Join (or, for "local", start) the Ray cluster; True when this call started Ray here."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=None if address == "auto" else address, log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError(
            f"Cannot reach a Ray cluster at {address!r}: {exc}. Start one with "
            "`ray start --head`, give its address, or use --ray local."
        ) from exc
    return True


class DecodeActor:
    """Decodes one batch of files per call in a worker process of its own (runs in Ray)."""

    def __init__(self, config: WorkerConfig, batch_size: int) -> None:
        self.decoder = ProcessDecoder(config, workers=1, max_ahead=4 * batch_size)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        jobs = [pickle.loads(blob) for blob in batch["job"]]
        # the decoder's worker stays up between calls; each run ends when its jobs are done
        outcomes = {o.job.path: o for o in self.decoder.run(jobs) if o is not None}
        return {"outcome": [pickle.dumps(outcomes[job.path]) for job in jobs]}


class EncodeActor:
    """Holds the encoder; encodes one batch of decoded files per call (runs in Ray)."""

    def __init__(
        self, model: ModelSpec, device: str, precision: str, threads: int, batch_size: int, store_patches: bool
    ) -> None:
        import torch

        from mmsearch.models import Encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = Encoder(model, device=device, precision=precision).load()
        self.batch_size, self.store_patches = batch_size, store_patches

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        from indexer.pipeline import encode_files

        outcomes: list[Outcome] = [pickle.loads(blob) for blob in batch["outcome"]]
        decoded = [o for o in outcomes if isinstance(o, Decoded)]
        for d, encoded in zip(
            decoded,
            encode_files(self.encoder, decoded, self.batch_size, self.store_patches),
            strict=True,
        ):
            for item, (vector, patches) in zip(d.items, encoded, strict=True):
                item.vector, item.patches, item.pixels = vector, patches, None
        return {"outcome": [pickle.dumps(o) for o in outcomes]}


class RayDecoder:
    """A decoder for `run_index` whose outcomes come back encoded from a Ray cluster.

    `address`: "auto" joins the running cluster (`RAY_ADDRESS`, or the one started on this
    machine with `ray start`) and starts one here when there is none, "local" always starts one
    here for the run, anything else is a cluster address (`ray://HOST:10001`, `HOST:6379`).
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
    ) -> None:
        self.address, self.model, self.device, self.precision = address, model, device, precision
        self.config, self.batch_size, self.store_patches = config, batch_size, store_patches
        self._started_here = False
        self.plan: RayPlan | None = None
        self.started_here = False  # the caller connected (`connect`) and Ray was started then

    def __enter__(self) -> RayDecoder:
        ray = import_ray()
        self._started_here = connect(self.address) or self.started_here
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the run has its own progress
        context.print_on_execution_start = False
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        self.plan = plan_for(ray.cluster_resources(), self.device)
        log.info("indexing on Ray: %s", self.plan.describe())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started_here:
            import_ray().shutdown()

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Ray's tasks are scheduled by Ray; the driver's own encoding does not hold them back."""
        return contextlib.nullcontext()

    def run(self, jobs: Iterable[DecodeJob | Failed]) -> Iterator[Outcome | None]:
        """Outcomes in the order Ray finishes them; a file coming back twice (a batch run again
        after an actor died) is given once."""
        assert self.plan is not None, "use RayDecoder as a context manager"
        ray = import_ray()
        todo: list[DecodeJob] = []
        for job in jobs:
            if isinstance(job, Failed):
                yield job
            else:
                todo.append(job)
        if not todo:
            return
        plan = self.plan
        dataset = (
            ray.data.from_items(
                [{"job": pickle.dumps(job)} for job in todo],
                # blocks of at least a batch: Ray Data bundles blocks up to `batch_size` rows per
                # task and a task returns when all its rows are done, so smaller blocks would
                # pair up and the driver would hear of files two batches at a time
                override_num_blocks=max(1, len(todo) // self.batch_size),
            )
            .map_batches(
                DecodeActor,
                fn_constructor_kwargs={"config": self.config, "batch_size": self.batch_size},
                batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=plan.decoders),
                num_cpus=plan.cpus_per_decoder,
            )
            .map_batches(
                EncodeActor,
                fn_constructor_kwargs={
                    "model": self.model,
                    "device": plan.device,
                    "precision": self.precision,
                    "threads": plan.threads,
                    "batch_size": self.batch_size,
                    "store_patches": self.store_patches,
                },
                batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.cpus_per_actor,
                num_gpus=plan.gpus_per_actor,
            )
        )
        seen: set[str] = set()
        for row in dataset.iter_rows():
            outcome: Outcome = pickle.loads(row["outcome"])
            if outcome.job.path in seen:
                continue
            seen.add(outcome.job.path)
            yield outcome

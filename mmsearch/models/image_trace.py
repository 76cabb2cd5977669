"""A traced copy of a CPU encoder's image tower, so an index run starts without open_clip.

Before it encodes a picture, an `index` run on the CPU imports open_clip (which pulls in
torchvision, `torch._dynamo` and transformers: 2.6 s of the 4.7 s it took to load ViT-B-32 on
the 2-core Xeon) and builds the model. So the first run of a checkpoint keeps its image tower as
a frozen TorchScript module in the model cache (``$MMSEARCH_CACHE/traced/v<FORMAT>/...``, keyed
by the model, the weights' digest, the precision and torch's version), checked to compute the
eager tower's numbers; later runs load it with torch alone (1.4 s for ViT-B-32, the same speed
and the same vectors). Anything else (texts, patch features) loads the whole model when first
asked for (`Encoder.load_image_tower`).

Only models whose weights are a local file (bundled, ``ARCH@checkpoint``) are traced: their
digest is known without building them. TorchScript is deprecated in favour of `torch.export`,
whose saved program here loaded in 3.8 s (it imports `torch._dynamo`) and encoded six times
slower; the pinned torch has TorchScript, and where loading a trace fails the eager model is used.
``MMSEARCH_IMAGE_TOWER=eager`` turns traces off (comparisons).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch import paths
from mmsearch.models import onnx_runtime as rt
from mmsearch.models.preprocess import ImagePreprocess
from mmsearch.models.registry import ModelSpec

if TYPE_CHECKING:
    import torch

    from mmsearch.models.encoder import Encoder

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when a trace's layout or meaning changes; older ones are then ignored."""
MODULE_FILE = "image_tower.pt"
TRACEABLE = ("fp32", "bf16")  # int8's dynamically quantised linears are left to the eager model
EXAMPLE_BATCH = 4
TOLERANCE = 1e-3  # largest difference allowed between the trace's features and the eager tower's
TOWER_ENV = "MMSEARCH_IMAGE_TOWER"


@dataclass
class TracedImageTower:
    """The image tower as a TorchScript module, with what the encoder must know about it."""

    module: Any  # torch.jit.ScriptModule
    weights_id: str
    precision: str
    dim: int
    preprocess: ImagePreprocess
    dtype: torch.dtype  # of the pixels it takes

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels.to(self.dtype))


def weights_file(spec: ModelSpec) -> Path | None:
    """The weights file of a model traced here (bundled, ``ARCH@checkpoint``), else None."""
    from mmsearch.models.openclip_loader import local_weights_file

    if spec.kind == "tiny" or (spec.kind == "local-file" and spec.arch):
        return local_weights_file(spec)
    return None


def trace_dir(spec: ModelSpec, weights_id: str, requested_precision: str) -> Path:
    """Where the trace of these weights at this precision, on this CPU and torch, lives."""
    from mmsearch.models.device import cpu_has_native_bf16

    cpu = "bf16cpu" if cpu_has_native_bf16() else "cpu"
    torch_version = importlib.metadata.version("torch")
    leaf = f"{rt.slug(spec.name)}-{weights_id}-{requested_precision.lower()}-{cpu}-torch{torch_version}"
    return paths.cache_dir() / "traced" / f"v{FORMAT}" / leaf


@dataclass(frozen=True)
class TracedIdentity:
    """What a trace's record says of the encoder it was made from: enough to bind a collection
    and to find its cached tag matrix without importing torch (a Ray run's driver)."""

    name: str
    weights_id: str
    precision: str  # as the CPU encoder resolved it ("bf16", "fp32")
    dim: int
    preprocess: ImagePreprocess
    dtype: str  # the tower's input dtype, as torch names it
    folder: Path

    device = "cpu"  # traces are made and run on the CPU


def traced_identity(spec: ModelSpec, requested_precision: str) -> TracedIdentity | None:
    """The record of the trace made for this model's current weights at this precision, read
    without torch; None (why at debug level) when none was made yet or traces are turned off."""
    if os.environ.get(TOWER_ENV, "").strip().lower() == "eager":
        return None
    source = weights_file(spec)
    if source is None:
        return None
    from mmsearch.models.openclip_loader import weights_digest

    weights_id = weights_digest(source)
    folder = trace_dir(spec, weights_id, requested_precision)
    meta = rt.read_meta(folder)
    if meta is None or meta.get("model") != spec.name or meta.get("weights_id") != weights_id:
        log.debug("no traced image tower of %s in %s yet", spec.name, folder)
        return None
    try:
        return TracedIdentity(
            spec.name, weights_id, str(meta["precision"]), int(meta["dim"]),
            _preprocess(meta["preprocess"]), str(meta["dtype"]), folder,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        log.debug("the trace record in %s is unusable (%s)", folder, exc)
        return None


def open_traced(spec: ModelSpec, requested_precision: str) -> TracedImageTower | None:
    """The trace made for this model's current weights at this precision, or None (why at
    debug level): none made yet, traces turned off, or it does not load."""
    identity = traced_identity(spec, requested_precision)
    if identity is None:
        return None
    try:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            module = torch.jit.load(str(identity.folder / MODULE_FILE), map_location="cpu")
        return TracedImageTower(
            module=module.eval(),
            weights_id=identity.weights_id,
            precision=identity.precision,
            dim=identity.dim,
            preprocess=identity.preprocess,
            dtype=getattr(torch, identity.dtype),
        )
    except Exception as exc:  # a damaged file, a torch without TorchScript: the eager model
        log.debug("the traced image tower in %s does not load (%s)", identity.folder, exc)
        return None


def save_traced(encoder: Encoder) -> bool:
    """Trace a loaded CPU encoder's image tower into the cache, once per weights and precision;
    False where it does not apply or the trace does not compute the eager tower's features."""
    spec = encoder.spec
    source = weights_file(spec)
    if source is None or encoder.device != "cpu" or encoder.precision not in TRACEABLE:
        return False
    if not encoder.loaded or encoder.weights_id in ("", "random"):
        return False
    folder = trace_dir(spec, encoder.weights_id, encoder.requested_precision)
    if rt.read_meta(folder) is not None:
        return True
    try:
        _trace(encoder, source, folder)
    except Exception as exc:
        log.debug("the image tower of %s is not traced: %s", spec.name, exc)
        return False
    return True


def _trace(encoder: Encoder, source: Path, folder: Path) -> None:
    import torch

    from mmsearch.models.device import input_dtype

    visual = encoder.model.visual
    dtype = input_dtype(visual)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(EXAMPLE_BATCH, 3, *encoder.preprocess.size, generator=generator)
    example = example.to(dtype)
    with rt.writing(folder) as scratch, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: checked below instead
        traced = torch.jit.freeze(torch.jit.trace(visual.eval(), example, check_trace=False))
        traced.save(str(scratch / MODULE_FILE))
        again = torch.jit.load(str(scratch / MODULE_FILE), map_location="cpu")
        other = torch.randn(EXAMPLE_BATCH + 1, 3, *encoder.preprocess.size, generator=generator)
        want, got = visual(other.to(dtype)).float(), again(other.to(dtype)).float()
        gap = float((want - got).abs().max())
        if gap > TOLERANCE:
            raise ValueError(f"the trace differs from the eager tower by {gap:.2g}")
        rt.write_meta(scratch, {
            "model": encoder.name, "weights_id": encoder.weights_id,
            "precision": encoder.precision, "dim": encoder.dim, "dtype": str(dtype).split(".")[-1],
            "preprocess": asdict(encoder.preprocess), "weights_file": rt.file_stamp(source),
            "torch": torch.__version__,
        })  # fmt: skip
    log.info("traced the image tower of %s (%s) into %s", encoder.name, encoder.precision, folder)


def _preprocess(fields: dict[str, Any]) -> ImagePreprocess:
    """An `ImagePreprocess` from its JSON form (lists back to tuples)."""
    return ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

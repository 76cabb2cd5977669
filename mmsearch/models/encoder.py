"""`Encoder`: images and texts -> L2-normalised float32 vectors in one shared space.

The model is loaded on first use (or by `load()`), so an `Encoder` is cheap to create; inference
runs under `torch.inference_mode()`, with fp16 autocast on CUDA; on the CPU exact fp32, or for a
large model a bf16-cast model where the CPU has native bf16, else an int8 image transformer
(`device.resolve_precision`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.models.device import (
    autocast,
    cast_for_precision,
    input_dtype,
    int8_target,
    resolve_device,
    resolve_precision,
)
from mmsearch.models.openclip_loader import LoadedModel, build_openclip
from mmsearch.models.preprocess import ImagePreprocess
from mmsearch.models.registry import ModelSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmsearch.models.image_trace import TracedImageTower

    ImageInput = Image.Image | torch.Tensor | np.ndarray

log = logging.getLogger(__name__)


class Encoder:
    """One CLIP model behind the encoder contract of docs/ARCHITECTURE.md."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        precision: str = "auto",
        preprocess_mode: str = "letterbox",
    ) -> None:
        self.spec = spec
        self.device = resolve_device(device)
        self.requested_precision = precision  # as asked: "auto" is resolved where it runs
        self.precision = resolve_precision(precision, self.device)  # final once the model loads
        self.preprocess_mode = preprocess_mode
        self._loaded: LoadedModel | None = None
        self._traced: TracedImageTower | None = None  # the image tower alone (`load_image_tower`)
        self._dim: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_loaded(
        cls, loaded: LoadedModel, device: str = "cpu", precision: str = "auto"
    ) -> Encoder:
        """Wrap a model already in memory, e.g. to evaluate recall while training."""
        encoder = cls(loaded.spec, device=device, precision=precision)
        encoder._install(loaded)
        return encoder

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"Encoder({self.name!r}, device={self.device!r}, {self.precision}, {state})"

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """Canonical model name, recorded with a collection so queries use the same encoder."""
        return self.spec.name

    @property
    def weights_id(self) -> str:
        """Which weights (a digest of the checkpoint file): recorded with a collection, so
        vectors of another checkpoint under the same name are never mixed in."""
        if self._loaded is None and self._traced is not None:
            return self._traced.weights_id
        return self.load()._loaded.weights_id  # type: ignore[union-attr]

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.load()
        assert self._dim is not None  # set by _install or load_image_tower
        return self._dim

    @property
    def image_size(self) -> int:
        """Side of the square input the preprocess produces (the longer side if not square)."""
        return max(self.preprocess.size)

    @property
    def preprocess(self) -> ImagePreprocess:
        if self._loaded is None and self._traced is not None:
            return self._traced.preprocess
        return self.load()._loaded.preprocess  # type: ignore[union-attr]

    @property
    def model(self) -> torch.nn.Module:
        return self.load()._loaded.model  # type: ignore[union-attr]

    # ------------------------------------------------------------ loading

    def load(self) -> Encoder:
        """Fetch and build the model now (idempotent, thread-safe) instead of on first encode."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    loaded = build_openclip(self.spec, preprocess_mode=self.preprocess_mode)
                    self._install(loaded)
        return self

    def load_image_tower(self) -> Encoder:
        """Load what encoding pictures needs: on the CPU the traced image tower made by an
        earlier run for these weights and this precision (`image_trace`: no open_clip import, no
        build), else the whole model. Texts and patch features load the whole model when asked."""
        if self._loaded is None and self._traced is None and self.device == "cpu":
            from mmsearch.models.image_trace import open_traced

            traced = open_traced(self.spec, self.requested_precision)
            if traced is not None:
                if traced.preprocess.mode != self.preprocess_mode:
                    traced.preprocess = replace(traced.preprocess, mode=self.preprocess_mode)
                self._traced, self.precision, self._dim = traced, traced.precision, traced.dim
                log.info(
                    "encoder %s ready on cpu (%s, traced image tower), dim %d",
                    self.name, self.precision, self._dim,
                )  # fmt: skip
        if self._traced is None:
            self.load()
        return self

    def _install(self, loaded: LoadedModel) -> None:
        loaded.model.eval().requires_grad_(False).to(self.device)
        params = sum(p.numel() for p in loaded.model.parameters())
        self.precision = resolve_precision(
            self.requested_precision, self.device, params, int8_ok=int8_target(loaded.model) is not None
        )
        cast_for_precision(loaded.model, self.device, self.precision)
        self._dim = int(self._encode_tokens(loaded, loaded.tokenizer([""])).shape[1])
        self._loaded = loaded
        log.info(
            "encoder %s ready on %s (%s), dim %d", self.name, self.device, self.precision, self._dim
        )

    # ------------------------------------------------------------ encoding

    def encode_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> (n, dim) float32, L2-normalised rows."""
        loaded = self.load()._loaded
        assert loaded is not None
        items = [texts] if isinstance(texts, str) else list(texts)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"encode_texts takes strings, got {type(item).__name__}")
        size = _positive(batch_size)
        if len(items) <= size:
            return self._stack([self._encode_tokens(loaded, loaded.tokenizer(items))] if items else [])
        # texts of similar length together, so each batch stops at its own longest text
        tokens = loaded.tokenizer(items)
        order = np.argsort(tokens.argmax(dim=1).numpy(), kind="stable")
        parts = [self._encode_tokens(loaded, tokens[chunk]) for chunk in _chunks(order, size)]
        out = np.empty((len(items), parts[0].shape[1]), np.float32)
        out[order] = np.concatenate(parts, axis=0)
        return out

    def encode_images(
        self, images: Iterable[ImageInput] | torch.Tensor, batch_size: int = 64
    ) -> np.ndarray:
        """PIL images, preprocessed (3, S, S) tensors/arrays, or an (n, 3, S, S) batch -> (n, dim)."""
        items: Sequence[Any] = images if _is_batch_tensor(images) else list(images)  # type: ignore[arg-type]
        parts = [
            self._encode_pixels(self._to_batch(chunk))
            for chunk in _chunks(items, _positive(batch_size))
        ]
        return self._stack(parts)

    def _to_batch(self, chunk: Sequence[Any]) -> torch.Tensor:
        import torch

        if _is_batch_tensor(chunk):
            batch = chunk  # a slice of an (n, 3, H, W) tensor
        else:
            batch = torch.stack([self._one_image(item) for item in chunk])
        expected = (3, *self.preprocess.size)
        if tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"{self.name} takes images of shape {expected}; got {tuple(batch.shape[1:])}. "
                "Pass PIL images, or tensors made by this encoder's preprocess."
            )
        return batch

    def _one_image(self, item: Any) -> torch.Tensor:
        import torch

        if isinstance(item, torch.Tensor):
            return item
        if isinstance(item, np.ndarray):
            return torch.from_numpy(item)
        return self.preprocess(item)

    def _encode_tokens(self, loaded: LoadedModel, tokens: torch.Tensor) -> np.ndarray:
        """Texts run only up to the batch's longest end-of-text token where the model allows it
        (causal attention, end-of-text pooling: the same vectors, a fraction of the work for
        short texts such as tag prompts and queries); else over the whole context."""
        import torch

        forward = _prefix_module(loaded.model) or loaded.model.encode_text
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = forward(tokens.to(self.device))
        return _normalised(features)

    def _encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        import torch

        if self._loaded is None and self._traced is not None:
            with torch.inference_mode():
                return _normalised(self._traced(pixels))
        loaded = self.load()._loaded
        assert loaded is not None
        pixels = pixels.to(self.device, dtype=input_dtype(loaded.model), non_blocking=True)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = loaded.model.encode_image(pixels)
        return _normalised(features)

    def _stack(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate(parts, axis=0)


_PREFIX_MODULES: dict[int, Any] = {}


def _prefix_module(model: Any) -> Any:
    """`text_onnx.cut_text_forward` for this model, made once, or None where it does not apply
    (a model other than open_clip's plain CLIP with causal attention, e.g. SigLIP)."""
    key = id(model)
    if key not in _PREFIX_MODULES:
        from mmsearch.models.text_onnx import cut_text_forward

        _PREFIX_MODULES[key] = cut_text_forward(model)
    return _PREFIX_MODULES[key]


def _normalised(features: torch.Tensor) -> np.ndarray:
    """Normalise in fp32 after the forward pass, so fp16 rounding cannot leave norms off 1."""
    import torch.nn.functional as F

    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def _is_batch_tensor(value: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return isinstance(value, torch.Tensor) and value.ndim == 4


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _positive(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size

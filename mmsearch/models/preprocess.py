"""Image preprocessing that keeps the whole picture: letterbox to a square, never centre-crop.

CLIP's usual transform resizes the shorter side and centre-crops, which throws away the left and
right edges of a landscape photo (or top and bottom of a portrait), so "a dog at the edge" cannot
be found. We resize the longer side to the model's input size and pad the rest.

The padding colour is the model's normalisation mean (CLIP's dataset mean, a neutral grey). After
normalisation the padding is exactly zero, the network's "no signal" input, and it is the same for
every picture. The alternative, each image's own mean colour, would leak the dominant colour into
the border and make a mostly-red photo look even redder to a colour query.

`ImagePreprocess` is a plain frozen dataclass so it pickles into indexer worker processes; torch is
imported only when it is called.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mmsearch.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RESIZE_MODES = ("letterbox", "squash")
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default normalisation,
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)  # copied so no torch is needed to know it

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

_TORCH_RESAMPLE = {  # Pillow's filter -> torch's interpolate mode and antialias (no lanczos there)
    "bicubic": ("bicubic", True),
    "bilinear": ("bilinear", True),
    "nearest": ("nearest-exact", False),
    "lanczos": ("bicubic", True),
}
_RESIZE_PIXELS = 64_000_000
"""Source pixels per resize call on a device at most: their float copy is 768 MB."""

# Pillow reduces by an integer factor first when the image is this many times larger than the
# target: much faster on big photos, visually the same as a full-quality resize.
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class ImagePreprocess:
    """PIL image -> normalised float32 tensor (3, H, W); picklable, safe in worker processes."""

    size: tuple[int, int]  # (height, width) the model expects; square for every CLIP we ship
    mean: tuple[float, float, float]  # per-channel normalisation mean, in 0..1 (model's own)
    std: tuple[float, float, float]  # per-channel normalisation std, in 0..1 (model's own)
    mode: str = "letterbox"  # "letterbox" keeps the whole picture; "squash" stretches to fit
    interpolation: str = "bicubic"  # resampling filter for the resize

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ConfigError(
                f"Unknown preprocessing mode {self.mode!r}; use one of {', '.join(RESIZE_MODES)}."
            )
        if self.interpolation not in _RESAMPLE:
            raise ConfigError(
                f"Unknown interpolation {self.interpolation!r}; use one of {', '.join(_RESAMPLE)}."
            )

    @property
    def fill(self) -> tuple[int, int, int]:
        """Padding colour: the normalisation mean, so the pad is exactly zero after normalising."""
        r, g, b = (round(c * 255) for c in self.mean)
        return (r, g, b)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.to_array(image))

    def to_array(self, image: Image.Image) -> np.ndarray:
        """The same as calling, as a numpy array (3, H, W): cheap to send between processes."""
        pixels = self.to_uint8(image).astype(np.float32) / 255.0
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def normalise(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch of `to_uint8` pixels (n, H, W, 3) -> the model's input (n, 3, H, W) float32."""
        return normalise_uint8(pixels, self.mean, self.std)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Letterboxed RGB pixels (H, W, 3) before normalisation: a compact form to cache."""
        return np.asarray(self.fit(to_rgb(image, background=self.fill)), dtype=np.uint8)

    def fit_tensors(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """`to_uint8` for decoded (3, h, w) uint8 tensors, on their device (a GPU batch decoder's
        output): (n, H, W, 3) uint8, the same letterbox with torch's antialiased resize (within a
        few grey levels of Pillow's). Pictures of one size are resized together."""
        import torch
        from torch.nn import functional

        height, width = self.size
        device = images[0].device
        out = torch.empty((len(images), height, width, 3), dtype=torch.uint8, device=device)
        out[:] = torch.tensor(self.fill, dtype=torch.uint8, device=device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[-2]), int(image.shape[-1])), []).append(i)
        mode, antialias = _TORCH_RESAMPLE[self.interpolation]
        for (h, w), members in groups.items():
            inner = (height, width) if self.mode == "squash" else _inner_size(h, w, height, width)
            top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
            step = max(1, _RESIZE_PIXELS // (h * w))  # bounds the float copy of a group of photos
            for start in range(0, len(members), step):
                chosen = members[start : start + step]
                batch = torch.stack([images[i] for i in chosen])
                if (h, w) != inner:
                    resized = functional.interpolate(
                        batch.float(), size=inner, mode=mode, antialias=antialias
                    )
                    batch = resized.round_().clamp_(0, 255).to(torch.uint8)
                rows = torch.tensor(chosen, device=device)
                out[rows, top : top + inner[0], left : left + inner[1]] = batch.permute(0, 2, 3, 1)
        return out

    def fit(self, image: Image.Image) -> Image.Image:
        """Resize an RGB image to the model's input size without cropping anything."""
        height, width = self.size
        resample = _RESAMPLE[self.interpolation]
        if self.mode == "squash":
            return _resize(image, (width, height), resample)
        inner_h, inner_w = _inner_size(image.height, image.width, height, width)
        inner = (inner_w, inner_h)
        canvas = Image.new("RGB", (width, height), self.fill)
        canvas.paste(
            _resize(image, inner, resample), ((width - inner[0]) // 2, (height - inner[1]) // 2)
        )
        return canvas


def _inner_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of a picture letterboxed into (height, width): the longer side fills it."""
    scale = min(width / w, height / h)
    return max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))


def stack_uint8(pixels: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    """`to_uint8` pictures (numpy, or tensors on a device from `fit_tensors`) as one (n, H, W, 3)
    batch: numpy when all are, else a tensor on the tensors' device, the numpy ones copied there
    from pinned memory in one transfer."""
    on_device = [i for i, p in enumerate(pixels) if not isinstance(p, np.ndarray)]
    if not on_device:
        return np.stack(pixels)  # type: ignore[arg-type]
    import torch

    first: torch.Tensor = pixels[on_device[0]]  # type: ignore[assignment]
    device = first.device
    out = torch.empty((len(pixels), *first.shape), dtype=torch.uint8, device=device)
    if device.type == "cuda":  # made on the decoder's stream, read on this one
        stream = torch.cuda.current_stream(device)
        for i in on_device:
            pixels[i].record_stream(stream)  # type: ignore[union-attr]
    out[on_device] = torch.stack([pixels[i] for i in on_device])  # type: ignore[misc]
    in_host = [i for i in range(len(pixels)) if isinstance(pixels[i], np.ndarray)]
    if in_host:
        host = torch.from_numpy(np.stack([pixels[i] for i in in_host]))
        if device.type == "cuda":
            host = host.pin_memory()
        out[in_host] = host.to(device, non_blocking=True)
    return out


def normalise_uint8(
    pixels: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> normalised float32 (n, 3, H, W): one conversion pass and one fused
    multiply-add in torch's threads (numpy's four single-threaded passes cost ~1 ms a picture)."""
    import torch

    x = torch.as_tensor(pixels).permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=x.device)
    shift = torch.tensor(
        [-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32, device=x.device
    )
    return x.mul_(scale.view(1, 3, 1, 1)).add_(shift.view(1, 3, 1, 1))


def _resize(image: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, resample, reducing_gap=_REDUCING_GAP)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels are laid over `background` instead of going black."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale: Pillow's convert would clip them to near-white."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16"):
        values = values / 257.0
    else:
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 255.0:
            values = (values - low) * (255.0 / max(high - low, 1e-6))
    grey = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    return grey.convert("RGB")

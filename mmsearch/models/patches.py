"""Compact per-image patch features, taken in the same forward pass as the CLIP embedding.

A cross-modal reranker (`mmsearch.models.itm`) reads where things are in a picture, which the
pooled embedding no longer says. Re-reading and re-encoding files at query time would cost far
more than the search, so the indexer stores a small grid of patch features per item beside its
vector (the EDJE recipe), from one pass through the image tower:

- **ModifiedResNet** (`tiny`, OpenAI RN50...): the trunk's final feature map, before the
  attention pool, average-pooled to at most ``grid`` x ``grid``. `tiny` at 64 px has a native
  2 x 2 map of 512 channels: P = 4, D = 512, 4,096 bytes per item in float16.
- **ViT**: the final patch tokens (no CLS), after the last norm and the projection into the shared
  space, average-pooled to ``grid`` x ``grid``: ViT-B-32 at 224 px gives 7 x 7 x 512, pooled to
  2 x 2 x 512 = 4,096 bytes in float16.

Patches are float16 (what is stored); embeddings are float32 and L2-normalised like
`Encoder.encode_images` returns them, and equal to them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.models.device import autocast, input_dtype

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_GRID = 2  # at most grid x grid patch features per image
PATCH_DTYPE = np.float16  # what the catalog stores


def patch_features(model: Any, pixels: torch.Tensor, *, grid: int = DEFAULT_GRID) -> torch.Tensor:
    """Preprocessed pixels (n, 3, S, S) -> float16 patch features (n, P, D) on the CPU."""
    return _forward(model, pixels, grid, "fp32")[1]


def encode_with_patches(
    model: Any, pixels: torch.Tensor, *, grid: int = DEFAULT_GRID, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """One pass: (L2-normalised float32 embeddings (n, dim), float16 patch features (n, P, D)).

    `model` is an open_clip CLIP or an `Encoder` (whose device and precision are then used).
    """
    if hasattr(model, "precision") and hasattr(model, "model"):
        precision = model.precision
    embeddings, patches = _forward(model, pixels, grid, precision)
    from mmsearch.models.encoder import _normalised

    return _normalised(embeddings), patches.numpy()


def patch_shape(
    model: Any, image_size: int | None = None, *, grid: int = DEFAULT_GRID
) -> tuple[int, int]:
    """(P, D) that `patch_features` gives for this model, from one blank image."""
    import torch

    net = _unwrap(model)
    size = image_size or _image_size(net)
    return tuple(patch_features(net, torch.zeros(1, 3, size, size), grid=grid).shape[1:])  # type: ignore[return-value]


def bytes_per_item(shape: tuple[int, int]) -> int:
    """Stored size of one item's patch features."""
    return int(shape[0] * shape[1] * np.dtype(PATCH_DTYPE).itemsize)


# ---------------------------------------------------------------- the forward pass


def _forward(
    model: Any, pixels: torch.Tensor, grid: int, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    net = _unwrap(model)
    device = next(net.parameters()).device
    pixels = pixels.to(device, dtype=input_dtype(net))
    with torch.inference_mode(), autocast(str(device), precision):
        out = net.forward_intermediates(
            image=pixels, image_indices=1, normalize=False, normalize_intermediates=True
        )
        fmap = out["image_intermediates"][-1]  # (n, C, h, w)
        fmap = _project_vit_tokens(net.visual, fmap)
        patches = _pool(fmap, grid)
    return out["image_features"].float(), patches.to("cpu", torch.float16)


def _project_vit_tokens(visual: Any, fmap: torch.Tensor) -> torch.Tensor:
    """ViT tokens into the shared space (as the pooled token is); a ResNet map stays as it is."""
    proj = getattr(visual, "proj", None)
    if proj is None or fmap.shape[1] != proj.shape[0]:
        return fmap
    return (fmap.permute(0, 2, 3, 1) @ proj.to(fmap.dtype)).permute(0, 3, 1, 2)


def _pool(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, C, h, w) -> (n, P, C), average-pooled to at most grid x grid."""
    import torch.nn.functional as F

    h, w = fmap.shape[-2:]
    if h > grid or w > grid:
        fmap = F.adaptive_avg_pool2d(fmap.float(), (min(h, grid), min(w, grid)))
    return fmap.flatten(2).transpose(1, 2)


def _unwrap(model: Any) -> Any:
    """An `Encoder` -> its loaded open_clip model; an open_clip model stays as it is."""
    net = model.model if hasattr(model, "model") and hasattr(model, "encode_images") else model
    if not hasattr(net, "forward_intermediates") or not hasattr(net, "visual"):
        raise TypeError(
            f"patch features need an open_clip CLIP model or an Encoder, got {type(model).__name__}"
        )
    return net


def _image_size(net: Any) -> int:
    size = getattr(net.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)

"""Encoder registry: a model *name* resolves to a loader plus its preprocessing.

    from mmsearch.models import load_encoder
    enc = load_encoder("tiny")                         # bundled, offline
    enc = load_encoder("ViT-B-32/laion2b_s34b_b79k")   # DEFAULT_MODEL, downloaded and cached
    enc.encode_texts(["a red circle"]); enc.encode_images([pil_image])

Name forms are listed in `registry` (tiny, ARCH/TAG, ARCH/random, hf-hub:org/repo,
local-dir:/folder, /path/ckpt.safetensors, ARCH@/path/ckpt.pt). Importing this package is cheap:
torch and open_clip are imported on first use.

For training code (see `openclip_loader`):

    from mmsearch.models import build_openclip, save_tiny_weights, Encoder
    loaded = build_openclip("tiny", pretrained=False)  # mmsearch-tiny architecture, random init
    # loaded.model (open_clip CLIP), loaded.tokenizer, loaded.preprocess (the letterbox we index with)
    save_tiny_weights(loaded.model)                    # mmsearch/models/tiny/tiny.safetensors
    Encoder.from_loaded(loaded).encode_texts([...])    # evaluate without saving
"""

from __future__ import annotations

from mmsearch.models.encoder import Encoder
from mmsearch.models.openclip_loader import (
    LoadedModel,
    build_openclip,
    save_tiny_weights,
    save_weights,
    tiny_weights_path,
)
from mmsearch.models.preprocess import ImagePreprocess
from mmsearch.models.registry import (
    TINY,
    TINY_ARCH,
    ModelSpec,
    add_model_config,
    list_models,
    resolve,
)

DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"

__all__ = [
    "DEFAULT_MODEL",
    "TINY",
    "TINY_ARCH",
    "Encoder",
    "ImagePreprocess",
    "LoadedModel",
    "ModelSpec",
    "add_model_config",
    "build_openclip",
    "list_models",
    "load_encoder",
    "resolve",
    "save_tiny_weights",
    "save_weights",
    "tiny_weights_path",
]


def load_encoder(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    precision: str = "auto",
    preprocess_mode: str = "letterbox",
    lazy: bool = False,
) -> Encoder:
    """Resolve a model name and load it now, so a missing or offline model fails before work starts.

    `lazy=True` defers fetching and building to the first encode (workers, quick CLI start).
    """
    encoder = Encoder(
        resolve(name), device=device, precision=precision, preprocess_mode=preprocess_mode
    )
    return encoder if lazy else encoder.load()

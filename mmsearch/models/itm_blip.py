"""A pretrained BLIP ITM model (``BlipForImageTextRetrieval`` in `transformers`) as an ITM reranker.

For users who can download weights, e.g. ``Salesforce/blip-itm-base-coco`` (about 0.9 GB). BLIP
reads the picture itself, not stored patch features (``input == "pixels"``): the reranking stage
hands it the candidates as PIL images, re-opened from their files (or keyframes), so it costs a
ViT-B forward pass per candidate, about 20-40 ms each on a CPU; keep its top-N small there.

Loading has the open_clip loaders' two steps: fetch the files into mmsearch's model cache
(`huggingface_hub.snapshot_download`, the only network call), then build from that local folder
with ``local_files_only=True``. Offline with an empty cache, the error names the model and the ways
out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch import paths
from mmsearch.errors import ModelError, ModelUnavailableError, require

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_BLIP_ITM = "Salesforce/blip-itm-base-coco"
# What a BLIP ITM repo needs: config, image processor, BERT tokenizer, weights (safetensors first).
BLIP_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "vocab.txt",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BATCH = 16  # candidates per forward pass (a ViT-B at 384 px each)


def blip_cache_dir() -> Path:
    """Download cache for transformers ITM models: a subfolder of mmsearch's model cache."""
    return paths.cache_dir() / "transformers"


def load_blip(repo: str, *, device: str = "cpu", cache_dir: Path | None = None) -> BlipItm:
    """Fetch a BLIP ITM repo (or take it from the cache) and load it."""
    cache = cache_dir or blip_cache_dir()
    folder = _fetch(repo, cache)
    return _build(folder, repo, device)


def load_blip_folder(folder: Path, *, device: str = "cpu") -> BlipItm:
    """A BLIP ITM model saved with ``save_pretrained`` (no network)."""
    return _build(folder, f"local-dir:{folder}", device)


class BlipItm:
    """BLIP's ITM head behind the ITM interface; candidates are PIL images."""

    input = "pixels"

    def __init__(self, name: str, model: Any, processor: Any, device: str = "cpu") -> None:
        self.name = name
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.device = device
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlipItm({self.name!r}, device={self.device!r})"

    def score_one(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        """One text against n pictures -> (n,) match probabilities."""
        return self.score([text], images)

    def score(self, texts: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        """Pairs (texts[i], images[i]) -> (n,) probabilities; a single text is paired with all."""
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        images = list(images)
        if len(texts) not in (1, len(images)):
            raise ValueError(
                f"{len(texts)} texts for {len(images)} images; give 1 or {len(images)}"
            )
        out = []
        with torch.inference_mode(), self._lock:
            for start in range(0, len(images), BATCH):
                chunk = [im.convert("RGB") for im in images[start : start + BATCH]]
                chunk_texts = (
                    texts * len(chunk) if len(texts) == 1 else texts[start : start + BATCH]
                )
                inputs = self.processor(
                    images=chunk, text=chunk_texts, return_tensors="pt", padding=True
                ).to(self.device)
                logits = self.model(**inputs, use_itm_head=True).itm_score
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.empty(0, np.float32)


def _fetch(repo: str, cache: Path) -> Path:
    """Download the repo's files once; any failure means the model is unavailable here."""
    hub = require("huggingface_hub", "Reranking with a BLIP ITM model", "text")
    try:
        folder = Path(
            hub.snapshot_download(
                repo, cache_dir=str(cache), allow_patterns=[*BLIP_FILES, WEIGHT_FILES[0]]
            )
        )
        if not (folder / WEIGHT_FILES[0]).is_file():  # older repos have only the PyTorch pickle
            folder = Path(
                hub.snapshot_download(
                    repo, cache_dir=str(cache), allow_patterns=[*BLIP_FILES, WEIGHT_FILES[1]]
                )
            )
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not fetch the ITM model {repo!r} ({_short(exc)}). Ways out: connect to the "
            f"internet once so it is cached in {cache} (or set MMSEARCH_CACHE to a folder that "
            "already holds it); give a folder saved with save_pretrained (local-dir:/path); or "
            "use the bundled 'tiny-itm' reranker with the 'tiny' encoder."
        ) from exc
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelUnavailableError(
            f"The hub repo {repo!r} has no BLIP weights ({' or '.join(WEIGHT_FILES)}) in {folder}; "
            "is it a BLIP ITM model such as 'Salesforce/blip-itm-base-coco'?"
        )
    return folder


def _build(folder: Path, name: str, device: str) -> BlipItm:
    transformers = require("transformers", "Reranking with a BLIP ITM model", "text")
    from mmsearch.models.sentence import _quiet_transformers

    try:
        with _quiet_transformers():
            model = transformers.BlipForImageTextRetrieval.from_pretrained(
                str(folder), local_files_only=True
            )
            processor = transformers.BlipProcessor.from_pretrained(
                str(folder), local_files_only=True
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"Cannot load the BLIP ITM model {name!r} from {folder} ({_short(exc)}). It must be a "
            "BlipForImageTextRetrieval model with its processor; delete the folder to download it afresh."
        ) from exc
    log.info("ITM model %s ready on %s", name, device)
    return BlipItm(name, model, processor, device)


def _short(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."

"""Image-text matching (ITM) models: how well does a text describe each candidate picture?

A dual encoder like CLIP embeds text and picture apart, so "a red circle and a blue square" and
"a blue circle and a red square" land on the same pictures. An ITM model reads both together and
answers with a match probability; the query stages use one to rerank CLIP's top-N (BLIP's
retrieval recipe).

Two kinds sit behind one interface (`score(texts, candidates)`, `score_one(text, candidates)`,
probabilities in [0, 1]); `input` says what a candidate is:

- ``"patches"``: `ItmModel`, e.g. the bundled ``tiny-itm``. It reads the patch features the
  indexer stored for each item (`mmsearch.models.patches`), so reranking never re-reads a file.
  It only understands the patch features of its own encoder (``tiny-itm`` reads ``tiny``'s).
- ``"pixels"``: `BlipItm` (`mmsearch.models.itm_blip`), a pretrained BLIP ITM model through
  `transformers`. It needs the picture itself (PIL images), so reranking with it opens each
  candidate's file (or keyframe) again: far slower, but it works with any encoder.

Name forms for `load_itm`:

=====================================  =========================================================
``tiny-itm``                           bundled, trained by ``python -m mmsearch.train.itm``
``local-dir:/folder`` or ``/folder``   a folder with ``itm_config.json`` + weights (ours), or a
                                       BLIP folder saved by transformers (``config.json``)
``Salesforce/blip-itm-base-coco``      a BLIP ITM repo on the Hugging Face hub (also with an
                                       ``hf-hub:`` prefix), downloaded once into the model cache
=====================================  =========================================================

Importing this module is cheap: torch is imported when a model is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmsearch.errors import ModelError, ModelUnavailableError

if TYPE_CHECKING:
    import torch

    from mmsearch.models.itm_net import ItmNet

log = logging.getLogger(__name__)

TINY_ITM = "tiny-itm"
TINY_ITM_DIR = Path(__file__).parent / "tiny_itm"
CONFIG_NAME = "itm_config.json"
WEIGHTS_NAME = "tiny-itm.safetensors"

ITM_COMPANIONS: dict[str, str] = {"tiny": TINY_ITM}
"""Encoder name -> the ITM model trained on its patch features."""

SCORE_BATCH = 256  # (text, candidate) pairs per forward pass


def itm_for_encoder(encoder_name: str) -> str | None:
    """The ITM model that reads this encoder's stored patch features, or None if it has none."""
    return ITM_COMPANIONS.get(encoder_name)


class ImageTextMatcher(Protocol):
    """What a reranker needs from an ITM model."""

    name: str
    input: str  # "patches" (stored patch features) or "pixels" (PIL images)

    def score(self, texts: Sequence[str], candidates: Any) -> np.ndarray: ...

    def score_one(self, text: str, candidates: Any) -> np.ndarray: ...


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class ItmConfig:
    """Everything besides the weights: saved as itm_config.json beside them."""

    name: str  # canonical name, e.g. "tiny-itm"
    encoder: str  # the encoder whose patch features it reads ("tiny")
    tokenizer: str  # open_clip tokenizer name ("mmsearch-tiny": tiny's own)
    patch_grid: int  # the grid `patch_features` was called with
    patch_tokens: int  # P
    patch_dim: int  # D
    vocab: tuple[int, ...]  # tokenizer ids the model knows, in compact-id order; others are unknown
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    context_length: int = 32

    def net_config(self):
        from mmsearch.models.itm_net import ItmNetConfig

        return ItmNetConfig(
            vocab_size=len(self.vocab) + 2,
            patch_dim=self.patch_dim,
            patch_tokens=self.patch_tokens,
            width=self.width,
            layers=self.layers,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            context_length=self.context_length,
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["vocab"] = list(self.vocab)
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> ItmConfig:
        try:
            data = json.loads(path.read_text())
            data["vocab"] = tuple(data["vocab"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"The ITM config {path} cannot be read ({exc}).") from exc


# ---------------------------------------------------------------- tokens


def open_clip_tokenizer(name: str, context_length: int = 32):
    """The open_clip tokenizer of a model name: list[str] -> LongTensor (n, context_length)."""
    import open_clip

    from mmsearch.models.registry import ensure_registered

    ensure_registered()
    return open_clip.get_tokenizer(name, context_length=context_length)


class CompactTokenizer:
    """open_clip's tokenizer, with ids mapped onto the model's small vocabulary.

    Words the model never saw in training read as one "unknown" token, not as noise.
    """

    def __init__(self, name: str, vocab: Sequence[int], context_length: int) -> None:
        import torch

        from mmsearch.models.itm_net import PAD, UNK

        self._tokenizer = open_clip_tokenizer(name, context_length)
        self._eot = int(
            getattr(self._tokenizer, "eot_token_id", None) or self._tokenizer(["x"])[0].max()
        )
        size = max(int(self._eot) + 1, max(vocab, default=0) + 1)
        self._lookup = torch.full((size,), UNK, dtype=torch.long)
        self._lookup[torch.tensor(list(vocab), dtype=torch.long)] = torch.arange(2, len(vocab) + 2)
        self._pad = PAD
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> compact ids (n, T), padded with PAD to the longest text."""
        import torch

        rows = [self._one(t) for t in texts]
        longest = max(len(r) for r in rows)
        out = torch.full((len(rows), longest), self._pad, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def _one(self, text: str) -> torch.Tensor:
        row = self._cache.get(text)
        if row is None:
            ids = self._tokenizer([text])[0]
            end = (
                int((ids == self._eot).nonzero()[0]) + 1
                if bool((ids == self._eot).any())
                else len(ids)
            )
            row = self._lookup[ids[:end].clamp(max=len(self._lookup) - 1)]
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[text] = row
        return row


# ---------------------------------------------------------------- the model


class ItmModel:
    """A small cross-attention ITM model over stored patch features (``input == "patches"``)."""

    input = "patches"

    def __init__(self, config: ItmConfig, net: ItmNet, tokenizer: CompactTokenizer) -> None:
        self.config = config
        self.net = net.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"ItmModel({self.name!r}, reads {self.encoder!r} patches {self.patch_shape})"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def encoder(self) -> str:
        """The encoder whose patch features this model reads."""
        return self.config.encoder

    @property
    def patch_shape(self) -> tuple[int, int]:
        """(P, D) of the patch features it reads."""
        return (self.config.patch_tokens, self.config.patch_dim)

    def understands(self, text: str) -> bool:
        """Whether every token of `text` is one the model learned (an unknown word makes its
        judgement meaningless, so a reranker should leave such a query to CLIP)."""
        from mmsearch.models.itm_net import UNK

        return not bool((self.tokenizer([text]) == UNK).any())

    def score_one(self, text: str, patches: np.ndarray) -> np.ndarray:
        """One text against n candidates' patch features (n, P, D) -> (n,) match probabilities."""
        return self.score([text], patches)

    def score(self, texts: Sequence[str], patches: np.ndarray) -> np.ndarray:
        """Pairs (texts[i], patches[i]) -> (n,) probabilities; a single text is paired with all."""
        return _sigmoid(self.logits(texts, patches))

    def logits(self, texts: Sequence[str], patches: np.ndarray) -> np.ndarray:
        """Like `score`, before the sigmoid: what a fused ranking should add, not probabilities."""
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        features = self._check(texts, patches)
        if not len(features):
            return np.empty(0, dtype=np.float32)
        ids = self.tokenizer(texts)
        out = []
        with torch.inference_mode():
            for start in range(0, len(features), SCORE_BATCH):
                stop = start + SCORE_BATCH
                batch_ids = ids if len(ids) == 1 else ids[start:stop]
                part = torch.from_numpy(
                    np.ascontiguousarray(features[start:stop], dtype=np.float32)
                )
                out.append(self.net(batch_ids, part).float().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def _check(self, texts: list[str], patches: np.ndarray) -> np.ndarray:
        features = np.asarray(patches)
        if features.ndim != 3 or tuple(features.shape[1:]) != self.patch_shape:
            raise ModelError(
                f"The ITM model {self.name!r} reads patch features of shape (n, "
                f"{self.patch_shape[0]}, {self.patch_shape[1]}) from the encoder {self.encoder!r}; "
                f"got {features.shape}. Patch features come from "
                "mmsearch.models.patches.encode_with_patches with that encoder."
            )
        if len(texts) not in (1, len(features)):
            raise ValueError(
                f"{len(texts)} texts for {len(features)} candidates; give 1 or {len(features)}"
            )
        return features


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


# ---------------------------------------------------------------- load and save


def build_itm(config: ItmConfig) -> ItmModel:
    """A model with random weights (for training)."""
    from mmsearch.models.itm_net import ItmNet

    tokenizer = CompactTokenizer(config.tokenizer, config.vocab, config.context_length)
    return ItmModel(config, ItmNet(config.net_config()), tokenizer)


def load_itm(name: str, *, device: str = "cpu") -> ImageTextMatcher:
    """Resolve an ITM model name (see the module doc) and load it now."""
    text = (name or "").strip()
    if not text:
        raise ModelError(f"No ITM model name given; try {TINY_ITM!r}.")
    if text == TINY_ITM:
        return _load_folder(TINY_ITM_DIR, TINY_ITM)
    folder = Path(text.removeprefix("local-dir:")).expanduser()
    if text.startswith("local-dir:") or folder.is_dir():
        return _load_local(folder)
    repo = text.removeprefix("hf-hub:").strip("/")
    if repo.count("/") == 1 and not text.startswith(("/", ".", "~")):
        from mmsearch.models.itm_blip import load_blip

        return load_blip(repo, device=device)
    raise ModelError(
        f"Unknown ITM model {name!r}. An ITM model is {TINY_ITM!r} (bundled, reads the 'tiny' "
        "encoder's patches), a folder (local-dir:/path), or a BLIP ITM repo such as "
        "'Salesforce/blip-itm-base-coco'."
    )


def _load_local(folder: Path) -> ImageTextMatcher:
    folder = folder.resolve()
    if (folder / CONFIG_NAME).is_file():
        return _load_folder(folder, f"local-dir:{folder}")
    if (folder / "config.json").is_file():
        from mmsearch.models.itm_blip import load_blip_folder

        return load_blip_folder(folder)
    raise ModelError(
        f"ITM model folder {folder} has neither {CONFIG_NAME} (an mmsearch ITM model) nor "
        "config.json (a BLIP model saved by transformers)."
    )


def _load_folder(folder: Path, name: str) -> ItmModel:
    config_path, weights = folder / CONFIG_NAME, _weights_in(folder)
    if not config_path.is_file() or weights is None:
        raise ModelUnavailableError(
            f"The ITM model {name!r} has no weights yet: {folder} lacks {CONFIG_NAME} or a "
            "safetensors file. Train it with `python -m mmsearch.train.itm` (under 17 minutes on "
            "a CPU), or turn the ITM reranker off."
        )
    config = ItmConfig.from_file(config_path)
    model = build_itm(config)
    _load_state(model.net, weights, name)
    if name != config.name:
        model.config = ItmConfig(**{**asdict(config), "name": name, "vocab": config.vocab})
    log.info(
        "ITM model %s ready (reads %s patches %s)", model.name, model.encoder, model.patch_shape
    )
    return model


def _weights_in(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.safetensors"))
    return found[0] if found else None


def _load_state(net: torch.nn.Module, path: Path, name: str) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except Exception as exc:
        raise ModelError(
            f"The weights {path} of the ITM model {name!r} cannot be loaded ({exc}); the file is "
            "corrupt or does not match its itm_config.json. Retrain with `python -m mmsearch.train.itm`."
        ) from exc


def save_itm(model: ItmModel, folder: str | os.PathLike[str] | None = None) -> Path:
    """Write itm_config.json and float16 safetensors weights (atomically) where `load_itm` finds them."""
    import torch
    from safetensors.torch import save_file

    target = Path(folder or TINY_ITM_DIR)
    target.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float16).contiguous()
        for k, v in model.net.state_dict().items()
    }
    weights = target / (WEIGHTS_NAME if model.name == TINY_ITM else "itm.safetensors")
    _atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"itm": model.name}))
    _atomic(target / CONFIG_NAME, lambda tmp: tmp.write_text(model.config.to_json()))
    return weights


def _atomic(path: Path, write) -> None:
    temp = path.with_name(path.name + ".tmp")
    write(temp)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)

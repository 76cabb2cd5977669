"""The patch-reading ITM reranker (`tiny-itm`) as ONNX, so a text search reranks without torch.

`load_itm_for_search` is what a search asks for: an exported copy of an mmsearch ITM model
(`OnnxItmModel`, onnxruntime and `mmsearch.models.clip_bpe`), made on first use from the torch
model and kept in the model cache under the digest of its weights. Pixel-reading models (BLIP)
and any model that cannot be exported come back as `load_itm` gives them (torch). An export is
kept only when its logits match torch's within `MAX_LOGIT_GAP` on check texts and pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.models import itm as itm_module
from mmsearch.models import onnx_runtime as rt
from mmsearch.models.itm import (
    CONFIG_NAME,
    SCORE_BATCH,
    TINY_ITM,
    TINY_ITM_DIR,
    ImageTextMatcher,
    ItmConfig,
    _sigmoid,
    _weights_in,
)

if TYPE_CHECKING:
    from mmsearch.models.itm import ItmModel

log = logging.getLogger(__name__)

KIND = "itm"
MODEL_FILE = "itm.onnx"
PAD, UNK = 0, 1  # as mmsearch.models.itm_net (which imports torch)
MAX_LOGIT_GAP = 1e-3
CHECK_TEXTS = ("a red circle", "a small blue square on the left and a large green star", "a car")


class OnnxItmModel:
    """`ItmModel`'s interface (``input == "patches"``) over an exported network."""

    input = "patches"

    def __init__(self, folder: Path, config: ItmConfig, meta: dict[str, Any]) -> None:
        from mmsearch.models.clip_bpe import ClipBpe

        self.config = config
        self.folder = folder
        self._bpe = ClipBpe(int(meta["tokenizer"]["context_length"]))
        size = max(self._bpe.eot + 1, max(config.vocab, default=0) + 1)
        self._lookup = np.full(size, UNK, dtype=np.int64)
        self._lookup[np.asarray(config.vocab, dtype=np.int64)] = np.arange(2, len(config.vocab) + 2)
        self._optimized_by = meta.get("onnxruntime")
        self._session: Any = (
            None  # opened on the first score: a query it does not understand never needs it
        )

    def __repr__(self) -> str:
        return f"OnnxItmModel({self.name!r}, reads {self.encoder!r} patches {self.patch_shape})"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def encoder(self) -> str:
        return self.config.encoder

    @property
    def patch_shape(self) -> tuple[int, int]:
        return (self.config.patch_tokens, self.config.patch_dim)

    def ids(self, text: str) -> np.ndarray:
        """Compact ids (1, T) of one text, up to its end token (as `CompactTokenizer`)."""
        row = self._bpe([text])[0]
        ends = np.flatnonzero(row == self._bpe.eot)
        row = row[: int(ends[0]) + 1] if len(ends) else row
        return self._lookup[np.minimum(row, len(self._lookup) - 1)][None, :]

    def understands(self, text: str) -> bool:
        return not bool((self.ids(text) == UNK).any())

    def score_one(self, text: str, patches: np.ndarray) -> np.ndarray:
        return self.score([text], patches)

    def score(self, texts: Sequence[str], patches: np.ndarray) -> np.ndarray:
        return _sigmoid(self.logits(texts, patches))

    def logits(self, texts: Sequence[str], patches: np.ndarray) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        features = self._check(texts, patches)
        if not len(features):
            return np.empty(0, dtype=np.float32)
        if len(texts) == 1:
            ids = self.ids(texts[0])
            parts = [
                self._run(ids, features[i : i + SCORE_BATCH])
                for i in range(0, len(features), SCORE_BATCH)
            ]
        else:  # pairs: the export reads one text at a time
            parts = [self._run(self.ids(t), features[i : i + 1]) for i, t in enumerate(texts)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _run(self, ids: np.ndarray, patches: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = rt.session(self.folder / MODEL_FILE, optimized_by=self._optimized_by)
        feed = {"ids": ids, "patches": np.ascontiguousarray(patches, dtype=np.float32)}
        return self._session.run(None, feed)[0]

    _check = itm_module.ItmModel._check


def load_itm_for_search(name: str, *, device: str = "cpu") -> ImageTextMatcher:
    """An ITM model for reranking: the exported copy when it can be had (module docstring)."""
    folder = _patch_model_folder(name)
    if folder is None or not rt.available():
        return itm_module.load_itm(name, device=device)
    found = open_onnx_itm(folder, name) or _restamped(folder, name)
    if found is not None:
        return found
    model = itm_module.load_itm(name, device=device)
    exported = export_itm(model, folder) if model.input == "patches" else None
    return exported or model


def _patch_model_folder(name: str) -> Path | None:
    """The folder of an mmsearch ITM model (itm_config.json), or None for other names."""
    text = (name or "").strip()
    if text == TINY_ITM:
        return TINY_ITM_DIR
    folder = Path(text.removeprefix("local-dir:")).expanduser()
    if (text.startswith("local-dir:") or folder.is_dir()) and (folder / CONFIG_NAME).is_file():
        return folder.resolve()
    return None


def _key(folder: Path, name: str) -> tuple[ItmConfig, Path, str] | None:
    weights = _weights_in(folder)
    if weights is None or not (folder / CONFIG_NAME).is_file():
        return None
    from mmsearch.models.openclip_loader import weights_digest

    config = ItmConfig.from_file(folder / CONFIG_NAME)
    if name != config.name:  # as itm._load_folder: a local model is known by its folder
        config = ItmConfig(**{**asdict(config), "name": name, "vocab": config.vocab})
    return config, weights, weights_digest(weights)


def open_onnx_itm(folder: Path, name: str) -> OnnxItmModel | None:
    """The export of this model's current weights, or None (why at debug level)."""
    found = _export_of(folder, name)
    if found is None:
        return None
    config, _weights, target, meta = found
    why = (
        f"no export in {target} yet" if meta is None
        else "the export was made from another config" if meta.get("config") != _config_dict(config)
        else "the weights changed since the export" if not rt.stamp_current(meta.get("weights_file"))
        else ""
    )  # fmt: skip
    if why:
        log.debug("the %s reranker runs on torch: %s", name, why)
        return None
    try:
        return OnnxItmModel(target, config, meta or {})
    except Exception as exc:
        log.debug("the %s reranker runs on torch: its export in %s fails (%s)", name, target, exc)
        return None


def _restamped(folder: Path, name: str) -> OnnxItmModel | None:
    """The export of these weights after all when only their file was copied or touched since
    (its digest, in the export's folder name, is theirs): it is stamped with the file as it is."""
    found = _export_of(folder, name)
    if found is None:
        return None
    config, weights, target, meta = found
    if meta is None or meta.get("config") != _config_dict(config):
        return None
    rt.restamp(target, weights)
    return open_onnx_itm(folder, name)


def _export_of(folder: Path, name: str) -> tuple[ItmConfig, Path, Path, dict[str, Any] | None] | None:
    """The model's config and weights file, where the export of those weights lives, and its
    description (None: not exported yet); None for a folder that is not an ITM model."""
    key = _key(folder, name)
    if key is None:
        return None
    config, weights, digest = key
    target = rt.export_dir(KIND, name, digest)
    return config, weights, target, rt.read_meta(target)


def _config_dict(config: ItmConfig) -> dict[str, Any]:
    data = asdict(config)
    data["vocab"] = list(config.vocab)
    return data


def export_itm(model: ItmModel, folder: Path) -> OnnxItmModel | None:
    """Export a torch ITM model read from `folder` (once per weights); None when it cannot be."""
    key = _key(folder, model.name)
    if key is None:
        return None
    config, weights, digest = key
    try:
        _export(model, config, weights, rt.export_dir(KIND, model.name, digest))
    except Exception as exc:
        log.debug("the %s reranker runs on torch: exporting failed (%s)", model.name, exc)
        return None
    return open_onnx_itm(folder, model.name)


def _export(model: ItmModel, config: ItmConfig, weights: Path, target: Path) -> None:
    import warnings

    import torch

    from mmsearch.models.text_onnx import _tokenizer_spec

    tokenizer = _tokenizer_spec(model.tokenizer._tokenizer)
    net = _ExportNet()(model.net.eval())
    example = (model.tokenizer(["a red circle"]), torch.randn(3, *model.patch_shape))
    with rt.writing(target) as scratch, torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the check below decides
            torch.onnx.export(
                net, example, str(scratch / "raw.onnx"), dynamo=False,
                input_names=["ids", "patches"], output_names=["logits"],
                dynamic_axes={"ids": {1: "length"}, "patches": {0: "n"}, "logits": {0: "n"}},
                opset_version=17,
            )  # fmt: skip
        rt.optimize(scratch / "raw.onnx", scratch / MODEL_FILE)
        (scratch / "raw.onnx").unlink()
        rt.write_meta(scratch, {
            "model": model.name, "config": _config_dict(config), "tokenizer": tokenizer,
            "weights_file": rt.file_stamp(weights), "torch": torch.__version__,
            "onnxruntime": rt.runtime_version(),
        })  # fmt: skip
        exported = OnnxItmModel(scratch, config, rt.read_meta(scratch) or {})
        patches = np.random.default_rng(0).normal(size=(50, *model.patch_shape)).astype(np.float32)
        for text in CHECK_TEXTS:
            if not np.array_equal(exported.ids(text), model.tokenizer([text]).numpy()):
                raise ValueError(f"the ported tokenizer reads {text!r} differently")
            for n in (1, 7, 50):
                gap = np.abs(
                    exported.logits([text], patches[:n]) - model.logits([text], patches[:n])
                )
                if not float(gap.max()) <= MAX_LOGIT_GAP:
                    raise ValueError(f"its logits differ from torch's by {float(gap.max()):.2g}")


def _ExportNet():  # noqa: N802 - a torch class, made when torch is imported
    import torch

    class ExportNet(torch.nn.Module):
        """`ItmNet.forward` for one text, with the picture count read from the tensor (the net's
        own `len(tokens)` would be frozen into the graph by the tracer)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, ids: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
            net = self.net
            text, mask = net.encode_text(ids)
            tokens = net.slot_tokens(patches)
            match = net.match_token.expand(tokens.shape[0], -1, -1)
            x = torch.cat([match, tokens], dim=1)
            for block in net.blocks:
                x = block(x, text, mask)
            return net.head(net.norm(x[:, 0])).squeeze(-1)

    return ExportNet

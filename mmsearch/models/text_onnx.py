"""CLIP's text tower as ONNX: a text query embedded without importing torch.

`export_text_tower` (torch, once per checkpoint) writes the tower beside a description of its
tokenizer; `open_text_tower` (no torch) runs it with onnxruntime and `mmsearch.models.clip_bpe`.
The index run exports it while it has the model in memory; a search that finds none exports it
then (see `QueryEncoder`). Every export is checked before it is kept: the same token ids as the
model's own tokenizer and a cosine of at least `MIN_COSINE` to the torch vectors.

For open_clip's plain CLIP (causal text attention, features taken at the end-of-text token,
which holds for the OpenAI/LAION ViTs and `tiny`), the export reads only the tokens up to the
longest text's end instead of the whole context (77 for ViT-B-32): with causal attention the
tokens after the end cannot change it, so the vector is the same and a short query costs a
fraction of the full pass. Other text towers are exported whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.models import onnx_runtime as rt

if TYPE_CHECKING:
    import torch

    from mmsearch.models.encoder import Encoder
    from mmsearch.models.openclip_loader import LoadedModel

log = logging.getLogger(__name__)

KIND = "clip-text"
MODEL_FILE = "text.onnx"
MIN_COSINE = 0.9999
"""An export whose vectors fall below this cosine to torch's on the check texts is not kept."""
BATCH = 256
CHECK_TEXTS = (
    "",
    "a red car",
    "a large yellow star on the left and a small blue circle on the right",
    "红色的圆形 和 蓝色的方块",
    "Crème brûlée at the café — naïve “quotes” & emoji 🚗🚙",
    " ".join(["a very long description of many shapes"] * 20),  # longer than any context
)


class OnnxTextTower:
    """An exported text tower: texts -> (n, dim) float32 unit rows, the encoder's text vectors."""

    def __init__(self, folder: Path, meta: dict[str, Any], *, prepack: bool = False) -> None:
        from mmsearch.models.clip_bpe import ClipBpe

        self.folder = folder
        self.name: str = meta["model"]
        self.weights_id: str = meta["weights_id"]
        self.dim: int = int(meta["dim"])
        self.prefix: bool = bool(meta["prefix"])
        self.tokenize = ClipBpe(int(meta["tokenizer"]["context_length"]))
        self._eot = self.tokenize.eot
        self._session = rt.session(
            folder / MODEL_FILE, optimized_by=meta.get("onnxruntime"), prepack=prepack
        )

    def __repr__(self) -> str:
        return f"OnnxTextTower({self.name!r}, {self.weights_id}, dim {self.dim})"

    def encode_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        items = [texts] if isinstance(texts, str) else list(texts)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"encode_texts takes strings, got {type(item).__name__}")
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [
            self._run(self.tokenize(items[i : i + BATCH])) for i in range(0, len(items), BATCH)
        ]
        return np.concatenate(parts, axis=0)

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        if self.prefix:  # only the tokens up to the longest text's end (module docstring)
            tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
        features = self._session.run(None, {"tokens": tokens})[0].astype(np.float32, copy=False)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return (features / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def open_text_tower(
    name: str, weights_id: str | None, *, prepack: bool = False
) -> OnnxTextTower | None:
    """The export for this model and checkpoint, ready to run; None (and why, at debug level)
    when there is none, onnxruntime is missing, or the checkpoint file changed since.
    ``prepack``: for a long-lived process (`onnx_runtime.session`)."""
    why = _unusable(name, weights_id)
    if why:
        log.debug("text queries of %s go through torch: %s", name, why)
        return None
    folder = rt.export_dir(KIND, name, weights_id or "")
    try:
        return OnnxTextTower(folder, rt.read_meta(folder) or {}, prepack=prepack)
    except Exception as exc:  # a damaged file: the torch path still answers
        log.debug(
            "text queries of %s go through torch: the export in %s fails (%s)", name, folder, exc
        )
        return None


def _unusable(name: str, weights_id: str | None) -> str:
    if not weights_id or weights_id == "random" and not name.endswith("/random"):
        return "the collection records no weights digest"
    if not rt.available():
        return f"onnxruntime is not installed, or ${rt.RUNTIME_ENV} says torch"
    folder = rt.export_dir(KIND, name, weights_id)
    meta = rt.read_meta(folder)
    if meta is None:
        return f"no export in {folder} yet"
    if meta.get("model") != name or meta.get("weights_id") != weights_id:
        return f"the export in {folder} is of another model"
    if not rt.stamp_current(meta.get("weights_file")):
        return f"the checkpoint {meta['weights_file']['path']} changed since it was exported"
    return ""


# ------------------------------------------------------------------ export (torch)


def export_text_tower(encoder: Encoder, weights_file: Path | None = None) -> OnnxTextTower | None:
    """Export the encoder's text tower (unless done before) and return it; None when this model
    cannot be exported or the export does not match torch (said once, at debug level)."""
    name, weights_id = encoder.name, encoder.weights_id
    found = open_text_tower(name, weights_id)
    if found is not None or not rt.available():
        return found
    from mmsearch.models.openclip_loader import local_weights_file

    weights_file = weights_file or local_weights_file(encoder.spec)
    folder = rt.export_dir(KIND, name, weights_id)
    meta = rt.read_meta(folder)
    if meta and (meta.get("model"), meta.get("weights_id")) == (name, weights_id) and weights_file:
        rt.restamp(folder, weights_file)  # the same weights (`weights_id` is their digest)
        if (again := open_text_tower(name, weights_id)) is not None:
            return again
    try:
        _export(encoder._loaded, weights_file)  # type: ignore[arg-type]
    except _NotExportable as exc:
        log.debug("text queries of %s go through torch: %s", name, exc)
        return None
    except Exception as exc:
        log.debug("text queries of %s go through torch: exporting failed (%s)", name, exc)
        return None
    return open_text_tower(name, weights_id)


class _NotExportable(Exception):
    pass


def _export(loaded: LoadedModel, weights_file: Path | None) -> None:
    import copy

    import torch

    tokenizer = _tokenizer_spec(loaded.tokenizer)
    if _float_dtype(loaded.model) != torch.float32:  # a bf16/fp16 cast lost the fp32 weights
        from mmsearch.models.openclip_loader import build_openclip  # (int8 keeps the text tower)

        model = build_openclip(loaded.spec).model.eval()
    else:  # a copy without the image tower (int8 may have quantised it; the export never needs it)
        visual = getattr(loaded.model, "visual", None)
        memo = {id(visual): None} if visual is not None else {}
        model = copy.deepcopy(loaded.model, memo).to("cpu", torch.float32).eval()
    prefix = _prefix_ok(model)
    wrapper = _PrefixText(model) if prefix else _FullText(model)
    folder = rt.export_dir(KIND, loaded.spec.name, loaded.weights_id)
    example = loaded.tokenizer(["a red car", "two words"])
    if prefix:
        example = example[:, : int(example.argmax(dim=1).max()) + 1]
    with rt.writing(folder) as scratch, torch.no_grad():
        _onnx_export(wrapper, example, scratch / "raw.onnx", prefix)
        rt.optimize(scratch / "raw.onnx", scratch / MODEL_FILE)
        (scratch / "raw.onnx").unlink()
        reference = model.encode_text(loaded.tokenizer(list(CHECK_TEXTS))).float()
        dim = int(reference.shape[1])
        rt.write_meta(scratch, {
            "model": loaded.spec.name, "weights_id": loaded.weights_id, "dim": dim,
            "prefix": prefix, "tokenizer": tokenizer, "weights_file": rt.file_stamp(weights_file),
            "torch": torch.__version__, "onnxruntime": rt.runtime_version(),
        })  # fmt: skip
        _check(scratch, loaded.tokenizer, reference.numpy())


def _onnx_export(wrapper: torch.nn.Module, example: torch.Tensor, path: Path, prefix: bool) -> None:
    import warnings

    import torch

    axes = {"tokens": {0: "n", 1: "length"} if prefix else {0: "n"}, "features": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: checked below instead
        torch.onnx.export(
            wrapper, (example,), str(path), dynamo=False, input_names=["tokens"],
            output_names=["features"], dynamic_axes=axes, opset_version=17,
        )  # fmt: skip


def _check(folder: Path, tokenizer: Callable[..., Any], reference: np.ndarray) -> None:
    """Refuse an export whose tokens or vectors differ from the model's own."""
    meta = rt.read_meta(folder) or {}
    tower = OnnxTextTower(folder, meta)
    ours, theirs = tower.tokenize(list(CHECK_TEXTS)), tokenizer(list(CHECK_TEXTS)).numpy()
    if not np.array_equal(ours, theirs):
        raise _NotExportable("its tokenizer does not match open_clip's on the check texts")
    got = tower.encode_texts(list(CHECK_TEXTS))
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = float((got * ref).sum(axis=1).min())
    if not cosine >= MIN_COSINE:
        raise _NotExportable(
            f"the exported tower's vectors differ from torch's (cosine {cosine:.6f})"
        )


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """The torch-free tokenizer that reproduces the model's (only open_clip's plain CLIP BPE)."""
    from open_clip import tokenizer as oc

    if type(tokenizer) is not oc.SimpleTokenizer:
        raise _NotExportable(f"its tokenizer ({type(tokenizer).__name__}) has no torch-free port")
    if tokenizer.reduction_fn is not None or tokenizer.clean_fn is not oc._clean_lower:
        raise _NotExportable("its tokenizer cleans or reduces text in a way the port does not")
    return {"kind": "clip-bpe", "context_length": int(tokenizer.context_length)}


def _float_dtype(model: torch.nn.Module) -> Any:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def cut_text_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`model.encode_text` run only up to the batch's longest end-of-text token (the highest
    token id), or None where that is not the same (`_prefix_ok`): positions after it never reach
    the pooled token, so features and gradients are unchanged at a fraction of the work for
    short texts. Shares the model's parameters and leaves its train/eval mode as it was."""
    if not _prefix_ok(model):
        return None
    training = model.training
    prefix = _PrefixText(model)  # (sets the wrapper, and so the model, to eval)
    model.train(training)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        return prefix(tokens[:, : int(tokens.argmax(dim=1).max()) + 1])

    return forward


def _prefix_ok(model: torch.nn.Module) -> bool:
    """Plain open_clip CLIP with causal text attention and end-of-text pooling (module doc),
    whose blocks `PrefixText` can run (plain self-attention blocks, batch first)."""
    import torch
    from open_clip.model import CLIP
    from open_clip.transformer import ResidualAttentionBlock

    mask = getattr(model, "attn_mask", None)
    if type(model) is not CLIP or mask is None or getattr(model, "text_pool_type", "") != "argmax":
        return False
    blocks = list(getattr(model.transformer, "resblocks", ()))
    plain = getattr(model.transformer, "batch_first", False) and all(
        type(b) is ResidualAttentionBlock
        and not hasattr(b, "ln_1_kv")
        and isinstance(b.attn, torch.nn.MultiheadAttention)
        and b.attn.batch_first
        and b.attn._qkv_same_embed_dim
        for b in blocks
    )
    causal = torch.full_like(mask, float("-inf")).triu(1)
    return bool(plain and blocks and torch.equal(mask, causal))


def _text_modules():
    import torch
    import torch.nn.functional as F

    class FullText(torch.nn.Module):
        def __init__(self, clip: torch.nn.Module) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(tokens)

    class PrefixText(FullText):
        """open_clip's `CLIP.encode_text` on the first `length` context positions, with the
        attention written without Python-side sizes, so the exported graph takes any length."""

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            from open_clip.transformer import text_global_pool

            m, length = self.clip, tokens.shape[1]
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
            mask = m.attn_mask[:length, :length].to(x.dtype)
            for block in m.transformer.resblocks:
                x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), mask))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = text_global_pool(m.ln_final(x), tokens, "argmax")
            if m.text_projection is None:
                return x
            if isinstance(m.text_projection, torch.nn.Linear):
                return m.text_projection(x)
            return x @ m.text_projection

    def _self_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor):
        heads = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(y.transpose(1, 2).flatten(2))

    return FullText, PrefixText


def _FullText(model: torch.nn.Module) -> torch.nn.Module:  # noqa: N802 - a class made lazily
    return _text_modules()[0](model).eval()


def _PrefixText(model: torch.nn.Module) -> torch.nn.Module:  # noqa: N802
    return _text_modules()[1](model).eval()


# ------------------------------------------------------------------ what a search embeds with


class QueryEncoder:
    """What a search embeds with: texts through the exported text tower when there is one (no
    torch), pictures through the full encoder. Without an export it makes one from the full
    encoder on the first text (torch, once per checkpoint); when that cannot be done, texts go
    through the full encoder too."""

    def __init__(self, name: str, weights_id: str | None, full: Callable[[], Encoder]) -> None:
        self.name = name
        self.weights_id = weights_id
        self._full = full
        self._tower: OnnxTextTower | None = None
        self._tried = False
        self.prepack = False  # set before the first text for a long-lived process (a server)
        self._lock = threading.Lock()

    def text_tower(self) -> OnnxTextTower | None:
        """The exported tower (made now if missing), or None when texts need torch."""
        with self._lock:
            if not self._tried:
                self._tower = open_text_tower(self.name, self.weights_id, prepack=self.prepack)
                if self._tower is None and self.weights_id and rt.available():
                    encoder = self._full()
                    if encoder.weights_id == self.weights_id:
                        self._tower = export_text_tower(encoder)
                self._tried = True
        return self._tower

    def encode_texts(self, texts: str | Sequence[str], batch_size: int = BATCH) -> np.ndarray:
        tower = self.text_tower()
        if tower is None:
            return self._full().encode_texts(texts, batch_size=batch_size)
        return tower.encode_texts(texts)

    def encode_images(self, images: Any, batch_size: int = 64) -> np.ndarray:
        return self._full().encode_images(images, batch_size=batch_size)

    @property
    def image_size(self) -> int:
        return self._full().image_size

    @property
    def dim(self) -> int:
        tower = self.text_tower()
        return tower.dim if tower is not None else self._full().dim

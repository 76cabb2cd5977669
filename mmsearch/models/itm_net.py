"""The torch network behind `tiny-itm`: text tokens that attend to an image's stored patch features.

Each block is the BLIP/ALBEF fusion layer at a small size: self-attention over the text, then
cross-attention from every text token to the patch tokens, then an MLP (all pre-norm). The first
text token (open_clip's start-of-text) is read by a linear head into one match logit.

Imported only when a model is built, because it imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD, UNK = 0, 1  # compact ids of padding and of every token outside the model's vocabulary


@dataclass(frozen=True)
class ItmNetConfig:
    """Sizes of the network; saved beside the weights."""

    vocab_size: int  # compact vocabulary: PAD, UNK, then the tokenizer ids the model knows
    patch_dim: int  # D: channels of one patch feature
    patch_tokens: int  # P: patch features per image
    width: int = 128  # model width of the text stream
    layers: int = 2  # fusion blocks
    heads: int = 4
    mlp_ratio: float = 2.0
    context_length: int = 32  # longest text in tokens (the tokenizer's context)
    image_slots: int = 0  # extra image tokens, each a learned mix of every patch (0: none)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, self_attention: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.self_attention = self_attention

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        n, t, w = x.shape
        h = self.heads
        q = self.q(x).view(n, t, h, w // h).transpose(1, 2)
        k, v = (
            self.kv(context)
            .view(context.shape[0], context.shape[1], 2, h, w // h)
            .permute(2, 0, 3, 1, 4)
        )
        if k.shape[0] != n:  # one context for every row (score_one's text, or one image)
            k, v = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(n, t, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads, self_attention=True)
        self.norm_cross = nn.LayerNorm(width)
        self.cross_attn = _Attention(width, heads, self_attention=False)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, x: torch.Tensor, image: torch.Tensor, text_mask: torch.Tensor | None
    ) -> torch.Tensor:
        y = self.norm_self(x)
        x = x + self.self_attn(y, y, text_mask)
        x = x + self.cross_attn(self.norm_cross(x), image, None)
        return x + self.mlp(self.norm_mlp(x))


class ItmNet(nn.Module):
    """(compact token ids (n, T), patch features (n or 1, P, D)) -> match logits (n,)."""

    def __init__(self, cfg: ItmNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.text_position = nn.Parameter(torch.randn(cfg.context_length, w) * 0.02)
        self.patch_norm = nn.LayerNorm(cfg.patch_dim)
        self.patch_proj = nn.Linear(cfg.patch_dim, w)
        self.patch_position = nn.Parameter(torch.randn(cfg.patch_tokens, w) * 0.02)
        # Objects straddle the coarse grid's cells; slots let the model regroup the cells'
        # features (a linear probe reads each place's colour and shape from all cells at once).
        self.slots = nn.Linear(cfg.patch_tokens * w, cfg.image_slots * w) if cfg.image_slots else None
        self.slot_norm = nn.LayerNorm(w) if cfg.image_slots else None
        self.blocks = nn.ModuleList(_Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, 1)

    def image_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch features (n, P, D) -> tokens the text attends to (n, P + slots, width)."""
        tokens = self.patch_proj(self.patch_norm(patches)) + self.patch_position
        if self.slots is None:
            return tokens
        n, p, w = tokens.shape
        slots = self.slot_norm(self.slots(tokens.reshape(n, p * w)).view(n, -1, w))
        return torch.cat([tokens, slots], dim=1)

    def forward(self, ids: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        n_text, n_image = ids.shape[0], patches.shape[0]
        n = max(n_text, n_image)
        x = self.token_embedding(ids) + self.text_position[: ids.shape[1]]
        if n_text != n:
            x = x.expand(n, -1, -1)
        image = self.image_tokens(patches)
        mask = _padding_mask(ids, n)
        for block in self.blocks:
            x = block(x, image, mask)
        return self.head(self.norm(x[:, 0])).squeeze(-1)


def _padding_mask(ids: torch.Tensor, n: int) -> torch.Tensor | None:
    """Additive attention mask that hides padding keys; None when no row is padded."""
    pad = ids == PAD
    if not bool(pad.any()):
        return None
    mask = torch.zeros(pad.shape, dtype=torch.float32, device=ids.device).masked_fill(
        pad, float("-inf")
    )
    mask = mask[:, None, None, :]
    return mask.expand(n, -1, -1, -1) if mask.shape[0] != n else mask

"""The torch network behind `tiny-itm`: a picture's patch tokens that read the text.

Two stages, both pre-norm transformer blocks at a small size:

1. **Text encoder**, once per text: token embeddings and positions through ``text_layers``
   self-attention blocks, so "red" is bound to "circle" in "a red circle and a blue square"
   before any picture is looked at.
2. **Fusion**, once per (text, picture) pair: a learned match token and the picture's P projected
   patch tokens (with their grid positions) go through ``layers`` blocks of self-attention over
   themselves, cross-attention to the encoded text tokens (padding hidden), then an MLP. A
   linear head on the match token gives one logit.

The per-pair work runs over 1 + P = 5 tokens, not over the text's 10-30, and the text is
encoded once however many pictures it is scored against (reranking scores one query against 50
pictures; training scores each caption against a small gallery): the cost per pair is a few
times lower than a fusion stream over the text tokens (the BLIP/ALBEF layout), at the same width.

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
    """Sizes of the network; saved beside the weights (as `mmsearch.models.itm.ItmConfig`)."""

    vocab_size: int  # compact vocabulary: PAD, UNK, then the tokenizer ids the model knows
    patch_dim: int  # D: channels of one patch feature
    patch_tokens: int  # P: patch features per image
    width: int = 128  # model width of both stages
    layers: int = 2  # fusion blocks (per pair)
    heads: int = 4
    mlp_ratio: float = 2.0
    context_length: int = 32  # longest text in tokens (the tokenizer's context)
    text_layers: int | None = None  # text blocks (per text); None: as many as `layers`
    image_slots: int = 5  # image tokens, each read from all P cells (the shapes world's 5 places)

    @property
    def text_blocks(self) -> int:
        return self.layers if self.text_layers is None else self.text_layers


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (m, S, width) -> keys and values (m, heads, S, width / heads)."""
        m, s, w = context.shape
        k, v = self.kv(context).view(m, s, 2, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        n, t, w = x.shape
        q = self.q(x).view(n, t, self.heads, w // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(n, t, w))


def _mlp(width: int, ratio: float) -> nn.Sequential:
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class _TextBlock(nn.Module):
    """Self-attention over the text tokens, then an MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = _mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm_self(x)
        x = x + self.self_attn(y, self.self_attn.keys_values(y), mask)
        return x + self.mlp(self.norm_mlp(x))


class _FusionBlock(nn.Module):
    """Self-attention over the match and patch tokens, cross-attention to the text, an MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads)
        self.norm_cross = nn.LayerNorm(width)
        self.cross_attn = _Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = _mlp(width, mlp_ratio)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (n, 1 + P, width) for n = m * k pictures, k consecutive ones per text of (m, T, width)."""
        y = self.norm_self(x)
        x = x + self.self_attn(y, self.self_attn.keys_values(y), None)
        m, (n, t, w) = text.shape[0], x.shape
        # Every picture of a text asks the same keys: fold them into one query sequence per text,
        # so each text's keys and values are computed once and nothing is gathered or copied.
        folded = self.norm_cross(x).reshape(m, (n // m) * t, w)
        kv = self.cross_attn.keys_values(text)
        x = x + self.cross_attn(folded, kv, text_mask).reshape(n, t, w)
        return x + self.mlp(self.norm_mlp(x))


class ItmNet(nn.Module):
    """(compact token ids (m, T), patch features (n, P, D)) -> match logits (n,).

    Each text is paired with k = n / m consecutive pictures: text i with picture i (m == n), one
    text with every picture (m == 1), or text i with pictures i*k .. i*k + k - 1 (training scores
    each caption against a small gallery). Each text is encoded once.
    """

    def __init__(self, cfg: ItmNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        # Word order is what tells "a red circle and a blue square" from "a blue circle and a red
        # square": positions start at N(0, 0.5), near the token embeddings' N(0, 1), not far below.
        self.text_position = nn.Parameter(torch.randn(cfg.context_length, w) * 0.5)
        self.text_blocks = nn.ModuleList(
            _TextBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.text_blocks)
        )
        self.text_norm = nn.LayerNorm(w)
        self.patch_norm = nn.LayerNorm(cfg.patch_dim)
        # One joint projection of all P cells into the image tokens ("slots"): objects straddle
        # the coarse grid's cells, and which colour goes with which shape, where, is read from
        # all cells at once (training teaches slot i what lies at place i).
        self.patch_proj = nn.Linear(cfg.patch_tokens * cfg.patch_dim, cfg.image_slots * w)
        self.slot_norm = nn.LayerNorm(w)
        self.match_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.blocks = nn.ModuleList(
            _FusionBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, 1)

    def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compact ids (m, T) -> text tokens (m, T, width) and their additive padding mask."""
        x = self.token_embedding(ids) + self.text_position[: ids.shape[1]]
        mask = _padding_mask(ids)
        for block in self.text_blocks:
            x = block(x, mask)
        return self.text_norm(x), mask

    def slot_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch features (n, P, D) -> image slots (n, image_slots, width)."""
        n = patches.shape[0]
        flat = self.patch_norm(patches).reshape(n, -1)
        return self.slot_norm(self.patch_proj(flat).view(n, self.cfg.image_slots, -1))

    def image_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch features (n, P, D) -> the match token and the slots (n, 1 + image_slots, width)."""
        tokens = self.slot_tokens(patches)
        return torch.cat([self.match_token.expand(len(tokens), -1, -1), tokens], dim=1)

    def forward(self, ids: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        m, n = ids.shape[0], patches.shape[0]
        if m == 0 or n % m:
            raise ValueError(f"{m} texts for {n} pictures; give 1, {n}, or a divisor of {n}")
        text, mask = self.encode_text(ids)
        x = self.image_tokens(patches)
        for block in self.blocks:
            x = block(x, text, mask)
        return self.head(self.norm(x[:, 0])).squeeze(-1)


def _padding_mask(ids: torch.Tensor) -> torch.Tensor | None:
    """Additive attention mask (m, 1, 1, T) that hides padding keys; None when no row is padded."""
    pad = ids == PAD
    if not bool(pad.any()):
        return None
    mask = torch.zeros(pad.shape, dtype=torch.float32, device=ids.device).masked_fill(
        pad, float("-inf")
    )
    return mask[:, None, None, :]

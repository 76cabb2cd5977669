"""Contrastive (InfoNCE) training of an OpenCLIP model: the one loop behind `tiny` and fine-tuning."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings; defaults suit a small model trained from scratch on CPU."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3  # peak AdamW learning rate, after warm-up
    weight_decay: float = 0.1
    warmup_steps: int = 150
    min_lr_ratio: float = 0.02  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_s: float | None = None  # stop early (and say so) when training runs past this


@dataclass
class LoopResult:
    steps: int
    seconds: float
    losses: list[float]  # mean loss per epoch
    stopped_early: bool


def _lr_at(step: int, total: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def soft_clip_loss(logits, tokens):
    """Symmetric InfoNCE where pairs with identical captions count as positives of each other.

    Small synthetic vocabularies repeat captions inside a batch ("a red circle" twice); plain
    InfoNCE would push those true matches apart.
    """
    import torch.nn.functional as F

    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()
    targets = same / same.sum(1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(targets * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def train_contrastive(
    model,
    tokenizer: Callable,
    pixels: np.ndarray,
    captions_for_epoch: Callable[[int], list[str]],
    mean: Sequence[float],
    std: Sequence[float],
    cfg: LoopConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> LoopResult:
    """Train `model` (an open_clip CLIP) on pre-rendered uint8 images and per-epoch captions."""
    import torch
    import torch.nn.functional as F

    from mmsearch.models.preprocess import normalise_uint8
    from mmsearch.models.text_onnx import cut_text_forward

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(pixels)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    model.requires_grad_(True)  # an Encoder wrapping this model for evaluation freezes it
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    pixels_t = torch.from_numpy(pixels)
    encode_text = cut_text_forward(model) or model.encode_text  # same gradients, less work
    model.train()
    start, step, losses, stopped = time.perf_counter(), 0, [], False
    for epoch in range(cfg.epochs):
        tokens = tokenizer(captions_for_epoch(epoch))
        order = torch.randperm(n, generator=gen)
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            images = normalise_uint8(pixels_t[idx], mean, std)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg)
            img = F.normalize(model.encode_image(images), dim=-1)
            txt = F.normalize(encode_text(tokens[idx]), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.T
            loss = soft_clip_loss(logits, tokens[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            epoch_loss += loss.item()
            step += 1
            if cfg.time_budget_s and time.perf_counter() - start > cfg.time_budget_s:
                stopped = True
                break
        losses.append(epoch_loss / max(1, b + 1))
        log.info("epoch %d/%d loss %.4f (%.0f s)", epoch + 1, cfg.epochs, losses[-1], time.perf_counter() - start)
        if on_epoch:
            on_epoch(epoch, losses[-1])
        if stopped:
            log.warning("time budget of %.0f s reached after %d steps; stopping early", cfg.time_budget_s, step)
            break
    model.eval()
    return LoopResult(step, time.perf_counter() - start, losses, stopped)

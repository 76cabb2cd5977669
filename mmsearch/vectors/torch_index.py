"""Exact search as one matrix multiply + top-k in torch: on CUDA (fp16) when present, else CPU.

This is how GPU search is served and measured, since faiss-gpu is not installable from PyPI.
1 M x 512 fp16 vectors take 1 GiB of the card (arithmetic); single-query latency and batched
queries/s on a GPU are not measured yet (`benchmarks/gpu/device_run.sh` measures them where a
device is lent). Scores are computed in the storage dtype (fp16 on GPU, fp32 on CPU) and returned
as float32; fp16 rounding (~1e-3 on cosine scores) can swap near-ties relative to FAISS.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.vectors.base import IdMap, VectorIndex, pad_results

log = logging.getLogger(__name__)

MAX_SCORES_PER_BLOCK = 1 << 27
"""Query rows are batched so one (queries x vectors) score block stays under ~256 MiB in fp16."""

_DTYPES = ("float16", "bfloat16", "float32")


def import_torch():
    """Import torch lazily; it is heavy and only this backend needs it here."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "The 'torch' vector backend needs PyTorch. Install it with: pip install torch"
        ) from exc
    return torch


class TorchIndex(VectorIndex):
    """Brute-force exact search on a torch device; same interface and tests as the FAISS backends."""

    kind = "torch"
    exact = True

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        encoder: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
    ) -> None:
        super().__init__(dim, metric, encoder=encoder)
        torch = import_torch()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype is not None and dtype not in _DTYPES:
            raise ConfigError(
                f"Unsupported torch index dtype {dtype!r}; use one of {', '.join(_DTYPES)}."
            )
        self._dtype_opt = dtype
        name = dtype or ("float16" if self.device.type == "cuda" else "float32")
        self._dtype = getattr(torch, name)
        self._vecs = torch.empty((0, self.dim), dtype=self._dtype, device=self.device)
        self._row_ids = np.empty(0, np.int64)
        self._n = 0
        self._map = IdMap()

    @property
    def count(self) -> int:
        return self._n

    @property
    def factory(self) -> str:
        return f"torch,{str(self._dtype).removeprefix('torch.')}"

    def options(self) -> dict[str, Any]:
        # The device is a property of the machine, not the file: a GPU-built index loads on a CPU.
        return {"dtype": self._dtype_opt}

    def ids(self) -> np.ndarray:
        return self._map.ids()

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        return self._map.lookup(ids)[0]

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        torch = import_torch()
        end = self._n + len(ids)
        if end > len(self._vecs):
            grown = torch.empty(
                (max(end, 2 * len(self._vecs), 64), self.dim), dtype=self._dtype, device=self.device
            )
            grown[: self._n] = self._vecs[: self._n]
            self._vecs = grown
            self._row_ids = np.resize(self._row_ids, len(grown))
        self._vecs[self._n : end] = torch.from_numpy(vectors).to(self.device, self._dtype)
        self._row_ids[self._n : end] = ids
        self._map.insert(ids, np.arange(self._n, end, dtype=np.int64))
        self._n = end

    def _remove(self, ids: np.ndarray) -> None:
        torch = import_torch()
        rows = self._map.delete(ids)
        keep = np.ones(self._n, bool)
        keep[rows] = False
        kept = np.flatnonzero(keep)
        self._vecs = self._vecs[torch.from_numpy(kept).to(self.device)].contiguous()
        self._row_ids = self._row_ids[kept]
        self._n = len(kept)
        self._map = IdMap(self._row_ids, np.arange(self._n, dtype=np.int64))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        torch = import_torch()
        kk = min(k, self._n)
        block = max(1, MAX_SCORES_PER_BLOCK // self._n)
        corpus = self._vecs[: self._n]
        out_s, out_r = [], []
        with torch.inference_mode():
            for i in range(0, len(queries), block):
                q = torch.from_numpy(queries[i : i + block]).to(self.device, self._dtype)
                scores, rows = torch.topk(q @ corpus.T, kk, dim=1)
                out_s.append(scores.float().cpu().numpy())
                out_r.append(rows.cpu().numpy())
        rows = np.concatenate(out_r)
        return pad_results(np.concatenate(out_s), self._row_ids[rows], k)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        torch = import_torch()
        rows = torch.from_numpy(self._map.lookup(ids)[1]).to(self.device)
        return self._vecs[rows].float().cpu().numpy()

    def _search_filtered(
        self, q: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A mask over rows: disallowed rows score -inf in the one matrix multiply."""
        torch = import_torch()
        mask = torch.full((self._n,), float("-inf"), device=self.device)
        mask[torch.from_numpy(self._map.lookup(ids)[1]).to(self.device)] = 0.0
        kk = min(k, len(ids))
        corpus = self._vecs[: self._n]
        with torch.inference_mode():
            qt = torch.from_numpy(q).to(self.device, self._dtype)
            scores, rows = torch.topk((qt @ corpus.T).float() + mask, kk, dim=1)
        rows = rows.cpu().numpy()
        return pad_results(scores.cpu().numpy(), self._row_ids[rows], k)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "ids": self._row_ids[: self._n].copy(),
            "vectors": self._vecs[: self._n].float().cpu().numpy(),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        ids = np.asarray(arrays["ids"], np.int64)
        vecs = np.asarray(arrays["vectors"], np.float32).reshape(-1, self.dim)
        if len(ids) != len(vecs):
            raise ValueError("torch index ids and vectors disagree in length")
        if len(ids):
            self._add(ids, np.ascontiguousarray(vecs))

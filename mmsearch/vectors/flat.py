"""Exact FAISS backend: ``IndexIDMap2`` over ``IndexFlatIP``; the default below the auto threshold."""

from __future__ import annotations

import logging

import numpy as np

from mmsearch.vectors.base import (
    IdMap,
    VectorIndex,
    import_faiss,
    owned_faiss_index,
    pad_results,
    read_faiss_index,
)

log = logging.getLogger(__name__)

GPU_MAX_K = 2048
"""faiss-gpu's largest k; bigger searches stay on the CPU."""


class FlatIndex(VectorIndex):
    """Brute-force inner product over every vector: exact, no training, cheap add and remove."""

    kind = "flat"
    exact = True

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        encoder: str | None = None,
        use_gpu: bool | None = None,
    ) -> None:
        super().__init__(dim, metric, encoder=encoder)
        faiss = import_faiss()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._ids = IdMap()
        self._use_gpu = use_gpu  # None = use a GPU when faiss-gpu sees one
        self._gpu_index = None

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def factory(self) -> str:
        return "IDMap2,Flat"

    def ids(self) -> np.ndarray:
        return self._ids.ids()

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        return self._ids.lookup(ids)[0]

    def _before_change(self) -> None:
        self._index = owned_faiss_index(self._index)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)
        self._ids.insert(ids, ids)
        self._gpu_index = None

    def _remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(ids)
        self._ids.delete(ids)
        self._gpu_index = None

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, self.count)
        scores, ids = self._searcher(kk).search(queries, kk)
        return pad_results(scores, ids, k)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(ids)

    def _search_filtered(
        self, q: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorBatch(ids)  # IDMap2 translates it to external ids
        kk = min(k, len(ids))
        scores, found = self._index.search(q, kk, params=params)
        return pad_results(scores, found, k)

    def _searcher(self, k: int):
        """The CPU index, or a cached GPU copy of it when faiss-gpu has a device (untested here:
        CI has no GPU; any failure falls back to the CPU for good)."""
        if self._use_gpu is False or k > GPU_MAX_K:
            return self._index
        if self._gpu_index is None:
            faiss = import_faiss()
            if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
                self._use_gpu = False
                return self._index
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
            except Exception as exc:  # any faiss-gpu failure: CPU is always correct
                log.warning("faiss GPU search unavailable (%s); using the CPU", exc)
                self._use_gpu = False
                return self._index
        return self._gpu_index

    def _state(self) -> dict[str, np.ndarray]:
        return {"faiss": import_faiss().serialize_index(self._index)}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        faiss = import_faiss()
        index = read_faiss_index(arrays["faiss"])
        if not isinstance(index, faiss.IndexIDMap2) or index.d != self.dim:
            raise ValueError(
                f"expected an IndexIDMap2 of dim {self.dim}, found {type(index).__name__}"
            )
        self._index = index
        self._ids = IdMap(faiss.vector_to_array(index.id_map).astype(np.int64))

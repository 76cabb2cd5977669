"""IVF-PQ for collections too big for HNSW's RAM: compact codes in RAM, exact vectors on disk.

``RR{d'},IVF{nlist},PQ{m}x4fs``: a random rotation of the ``dim``-d vectors into ``d'`` = 6·m
dimensions (528 at 512-d: it pads the vector so that m = 88 sub-quantisers of 6 dimensions
cover it, and spreads the energy evenly over them), an inverted file over 4-bit product-
quantisation codes scanned with FAISS's SIMD "fast-scan" kernels (m/2 bytes per vector: 44 at
512-d), whose top ``k * rescore_factor`` candidates (16,000 for k = 10, more past 1M vectors) are
re-scored exactly against float16 copies of the vectors kept in a memory-mapped file beside the
index (``mmsearch.vectors.rowfile``). RAM per vector: the code, FAISS's 8-byte id in its list, and the
row table (8 + 16 bytes): about 77 bytes at 512-d, where HNSW holds about 2,300 (float32 vector
and graph).

Why these settings (``benchmarks/ann_scale.py``, README "Vectors at scale"): a query from the
other modality (text -> image, best-match cosine ~0.3) is dominated by a direction the data
barely varies along, so its true top-10 differ from their neighbours by less than the error of
any code that fits in RAM; only a large exact re-score finds them. The fast-scan kernels return
thousands of candidates in a few milliseconds, so the pool is 1,600·k rows, 6-d sub-quantisers
(0.67 bit per dimension instead of 0.5) halve the pool needed for the same recall, and probing a
quarter of the lists keeps the shifted queries' true matches in the probed lists. The former ``PQ{dim/8}x4fs`` with a 16·k re-score found 0.41 of their top-10.

Life of the index:
- **Before training** (fewer than ``train_at`` vectors) it is an exact flat index, so a
  collection chosen as ``ivfpq`` from its first picture works at once.
- **Training** runs once enough vectors are in: k-means on a sample of at most
  ``TRAIN_PER_LIST`` vectors per list, ``nlist`` sized for the collection (or the ``expected``
  size it was created for), then every vector is added from the row file in chunks.
- **Adding** after that is incremental: new vectors are assigned to the trained lists and
  encoded; nothing is rebuilt.
- **Retraining** happens on one documented trigger: the collection has grown
  ``RETRAIN_GROWTH``-fold beyond the size the lists were sized for (the lists would be too
  long). It re-reads the row file, never the catalog. ``mmsearch rebuild`` also retrains.
- **Removing** marks rows dead (they are filtered out of results by a bitmap); the codes leave
  the inverted lists at the next save (one pass), and the rows are renumbered (a fresh row file)
  when more than half are dead.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.vectors import storage
from mmsearch.vectors.approx import _RowIndex
from mmsearch.vectors.base import import_faiss, read_faiss_index
from mmsearch.vectors.rowfile import Float16Rows

log = logging.getLogger(__name__)

TRAIN_MIN = 32_768
"""Vectors needed before the first training (below this the index is exact)."""

TRAIN_PER_LIST = 64
"""k-means sample per inverted list (FAISS warns below 39)."""

RETRAIN_GROWTH = 8
"""Retrain when the collection is this many times the size its lists were sized for."""

DEFAULT_NPROBE_SHARE = 1 / 4
"""Lists probed per query, as a share of nlist (at least ``MIN_NPROBE``): queries from the other
modality rank the lists poorly, their true matches lie in lists far down the order (at 1M
vectors, 512 lists: shifted recall 0.957 probing 64, 0.974 probing 128)."""

MIN_NPROBE = 64

DEFAULT_RESCORE_FACTOR = 1600
"""Candidates re-scored exactly per wanted result (16,000 float16 rows for k = 10, ~10 ms): 4-bit
codes order the near ties of a text -> image query poorly, and the pool that holds its true
top-10 grows with the collection (recall 0.97 among 4,000 candidates at 200k vectors, 0.89 at
1M; 0.97 among 16,000 at 1M); the re-score puts them right."""

RESCORE_GROWTH = 0.65
"""Past ``RESCORE_GROWTH_FROM`` vectors the pool grows as ``(n / RESCORE_GROWTH_FROM) ** 0.65``:
at a fixed pool the shifted queries' recall falls with the collection (0.974 at 1M, 0.95 at 3M
with 16,000 candidates; 0.978 at 3M with 32,000)."""

RESCORE_GROWTH_FROM = 1_000_000

MAX_RESCORE = 131_072
"""At most this many candidates per query (unless 16·k is more): a large k does not multiply."""

SUBQUANTISER_DIM = 6
"""Dimensions per 4-bit sub-quantiser (after the rotation pads the vector to a multiple)."""

ADD_CHUNK = 65_536


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two at or below sqrt(n), 16..65536 (2,048
    at 10M: assigning a vector costs nlist dot products, so fewer, longer lists keep adds cheap
    while fast-scan reads long lists quickly)."""
    return int(min(65_536, max(16, 2 ** math.floor(math.log2(max(math.sqrt(max(n, 1)), 1))))))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers: one per ``SUBQUANTISER_DIM`` dimensions, a multiple of 8 (88 at 512-d)."""
    return max(8, 8 * math.ceil(dim / SUBQUANTISER_DIM / 8))


def coded_dim(dim: int, pq_m: int) -> int:
    """The dimension the codes cover: ``dim`` padded (by the rotation) to a multiple of ``pq_m``."""
    return pq_m * math.ceil(dim / pq_m)


class IVFPQIndex(_RowIndex):
    """Inverted lists of 4-bit PQ codes (fast-scan) over a padding rotation, re-scored from a
    memory-mapped float16 file."""

    kind = "ivfpq"
    compact_dead_fraction = 0.5

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        encoder: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        rescore_factor: int = DEFAULT_RESCORE_FACTOR,
        rescore_growth: float = RESCORE_GROWTH,
        expected: int | None = None,
        train_at: int | None = None,
    ) -> None:
        super().__init__(dim, metric, encoder=encoder, rescore_factor=rescore_factor)
        self.rescore_growth = float(rescore_growth)  # 0: a fixed pool of k * rescore_factor
        self._fixed_nlist = nlist  # None: sized for the collection
        self._fixed_nprobe = nprobe  # None: DEFAULT_NPROBE_SHARE of the lists
        self.pq_m = int(pq_m or default_pq_m(self.dim))
        if self.pq_m < 2 or self.pq_m % 2:
            raise ValueError(f"pq_m={self.pq_m} must be even (fast-scan packs two codes a byte)")
        self.coded_dim = coded_dim(self.dim, self.pq_m)  # > dim: a random rotation pads
        self.expected = int(expected) if expected else None  # the size the lists are sized for
        self._train_at = train_at  # None: TRAIN_MIN or TRAIN_PER_LIST * nlist, whichever is more
        self._rows = Float16Rows(self.dim)
        self._index = self._new_flat()  # exact until trained
        self._nlist = 0  # 0: not trained yet
        self._trained_for = 0
        self._unremoved: list[np.ndarray] = []  # dead rows whose codes are still in the lists
        self._lossy = False

    # ------------------------------------------------------------- description
    @property
    def trained(self) -> bool:
        return self._nlist > 0

    def _spec(self, nlist: int | str) -> str:
        rotation = f"RR{self.coded_dim}," if self.coded_dim != self.dim else ""
        return f"{rotation}IVF{nlist},PQ{self.pq_m}x4fs"

    @property
    def factory(self) -> str:
        if not self.trained:
            return f"{self._spec('auto')} (untrained: Flat),rescore-f16"
        return f"{self._spec(self._nlist)},rescore-f16"

    @property
    def nprobe(self) -> int:
        if self._fixed_nprobe:
            return min(int(self._fixed_nprobe), max(self._nlist, 1))
        return min(self._nlist, max(MIN_NPROBE, round(self._nlist * DEFAULT_NPROBE_SHARE)))

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        """Lists probed per query (None: the default share); a search setting, not saved."""
        self._fixed_nprobe = int(value) if value else None

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "nlist": self._fixed_nlist,
            "nprobe": self._fixed_nprobe,
            "pq_m": self.pq_m,
            "rescore_growth": self.rescore_growth,
            "expected": self.expected,
            "train_at": self._train_at,
        }

    def _ram_bytes(self) -> int:
        table = 8 * len(self._row_ids) + 16 * self.count  # row -> id, and the sorted id map
        if not self.trained:
            structure = self._index.ntotal * (4 * self.dim + 16)
        else:
            faiss = import_faiss()
            ivf = faiss.extract_index_ivf(self._index)
            sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], np.int64)
            bbs = int(getattr(ivf, "bbs", 1))
            blocks = -(-sizes // bbs) * bbs  # fast-scan stores codes in blocks of bbs
            code = self.pq_m / 2  # 4 bits per sub-quantiser
            structure = int(blocks.sum() * code + sizes.sum() * 8)
            structure += ivf.nlist * self.coded_dim * 4 + 16 * self.coded_dim * 4  # centroids
            if self.coded_dim != self.dim:
                structure += self.coded_dim * self.dim * 4  # the rotation
        return int(table + structure + self._rows.nbytes_ram())

    def memory(self) -> dict[str, int]:
        return {"ram": self._ram_bytes(), "row_file": self._rows.nbytes_disk()}

    # ------------------------------------------------------------- structure
    def _new_flat(self):
        faiss = import_faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _wanted_nlist(self, n: int) -> int:
        if self._fixed_nlist:
            return int(self._fixed_nlist)
        return nlist_for(max(n, self.expected or 0))

    def _ready_to_train(self) -> bool:
        if self._train_at is not None:
            return self.count >= self._train_at
        return self.count >= max(TRAIN_MIN, TRAIN_PER_LIST * self._wanted_nlist(self.count))

    def _retrain_due(self) -> bool:
        if not self.trained:
            return self._ready_to_train()
        if self._fixed_nlist:
            return False
        return (
            self.count >= RETRAIN_GROWTH * self._trained_for and nlist_for(self.count) > self._nlist
        )

    def _ann_add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if len(self._rows) != rows[0]:
            raise RuntimeError("row file and row table out of step")
        self._rows.append(vectors)
        if self._retrain_due():
            log.info("training the ivfpq index on %d vectors", self.count)
            self._compact()  # _relabel trains on the live rows and adds them all
        else:
            self._index.add_with_ids(vectors, rows)

    def _ann_remove(self, rows: np.ndarray) -> None:
        self._unremoved.append(np.asarray(rows, np.int64))
        self._live_bitmap = None

    def _selector(self, bitmap: np.ndarray | None):
        if bitmap is None and not self._unremoved:
            return None  # every row in the lists is live
        return super()._selector(bitmap)

    def _ann_search(
        self, q: np.ndarray, kc: int, selector, share: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        if not self.trained:
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersIVF()
            # A filter keeping a share s of the rows meets allowed rows s times as often:
            # probe 1/s as many lists to see as many candidates.
            params.nprobe = min(self._nlist, math.ceil(self.nprobe / max(share, 1e-9)))
        if selector is not None:
            params.sel = selector
        return self._index.search(q, kc, params=params)

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._rows.gather(rows)

    def _candidates(self, k: int) -> int:
        """``k * rescore_factor``, grown past ``RESCORE_GROWTH_FROM`` vectors, capped."""
        growth = max(1.0, self.count / RESCORE_GROWTH_FROM) ** self.rescore_growth
        return min(int(k * self.rescore_factor * growth), max(MAX_RESCORE, 16 * k))

    def _exact_scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores of each query's candidates, one query at a time from the float16 rows
        (a block of queries x 4,000 candidates gathered as float32 would take gigabytes)."""
        out = np.empty(rows.shape, np.float32)
        for i in range(len(q)):
            out[i] = self._rows.scores(q[i], np.maximum(rows[i], 0))  # padding masked later
        return out

    def _relabel(self, live_rows: np.ndarray) -> None:
        """Renumber the live rows 0..n-1 (a fresh row file when any are dropped), training the
        lists first when that is due, and add every vector again from the row file."""
        if len(live_rows) != self._nrows:
            self._rows.keep(live_rows)
        n = len(live_rows)
        if self._retrain_due_for(n):
            self._train(n)
        elif self.trained:
            self._index.reset()  # keeps the centroids and the PQ codebooks
        else:
            self._index = self._new_flat()
        self._unremoved = []
        rows = np.arange(n, dtype=np.int64)
        for start in range(0, n, ADD_CHUNK):
            chunk = rows[start : start + ADD_CHUNK]
            self._index.add_with_ids(self._rows.gather(chunk), chunk)

    def _retrain_due_for(self, n: int) -> bool:
        # _compact calls _relabel before it updates the live count; judge on the live rows
        if not self.trained:
            return n >= (self._train_at or max(TRAIN_MIN, TRAIN_PER_LIST * self._wanted_nlist(n)))
        if self._fixed_nlist:
            return False
        return n >= RETRAIN_GROWTH * self._trained_for and nlist_for(n) > self._nlist

    def _train(self, n: int) -> None:
        faiss = import_faiss()
        nlist = max(1, min(self._wanted_nlist(n), n // 39))
        rng = np.random.default_rng(n)
        sample_n = min(n, max(TRAIN_PER_LIST * nlist, 65_536))  # PQ codebooks want 64k too
        sample = np.sort(rng.choice(n, size=sample_n, replace=False))
        x = np.concatenate(list(self._rows.chunks(sample)))
        index = faiss.index_factory(self.dim, self._spec(nlist), faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
        ivf.cp.niter = 12
        index.train(x)
        self._index, self._nlist = index, nlist
        self._trained_for = max(n, self.expected or 0)
        self._lossy = True
        log.info("trained %s on %d of %d vectors", self._spec(nlist), sample_n, n)

    # ------------------------------------------------------------- persistence
    def save(
        self, path, *, encoder: str | None = None, owner: dict[str, Any] | None = None
    ) -> None:
        """Apply pending removals, make the rows durable in the row file, then write the
        container and sidecar (which count those rows) atomically."""
        path = Path(path)
        self._apply_removals()
        self._rows.persist(path, append_in_place=self._disk_is_ours(path))
        super().save(path, encoder=encoder, owner=owner)
        self._rows.remove_others(path)

    def _disk_is_ours(self, path: Path) -> bool:
        """True when the saved index at ``path`` is the one this object loaded or last wrote (no
        other process saved since), so appending to its row file changes no row anyone reads."""
        if self.generation is None or not storage.sidecar_path(path).exists():
            return False
        try:
            return storage.read_sidecar(path).get("generation") == self.generation
        except Exception:  # an unreadable sidecar: write a fresh file
            return False

    def _apply_removals(self) -> None:
        if not self._unremoved:
            return
        dead = np.concatenate(self._unremoved)
        self._index.remove_ids(dead)
        self._unremoved = []
        self._live_bitmap = None

    def _state(self) -> dict[str, np.ndarray]:
        if len(self._rows) != self._nrows or self._rows.pending:
            raise RuntimeError("the row file must be persisted before the container is written")
        state = super()._state()
        state["faiss"] = import_faiss().serialize_index(self._index)
        state["row_file"] = np.array(self._rows.path.name if self._rows.path else "")
        state["trained_for"] = np.array(self._trained_for, np.int64)
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(arrays)
        faiss = import_faiss()
        self._index = read_faiss_index(arrays["faiss"])
        self._trained_for = int(arrays["trained_for"])
        if self._trained_for:
            self._nlist = int(faiss.extract_index_ivf(self._index).nlist)
            self._lossy = True
        name = str(arrays["row_file"])
        if self._nrows:
            if not name or self._source_path is None:
                raise ValueError("the ivfpq container names no row file")
            self._rows.open(Path(self._source_path).parent / name, self._nrows)
        if self._index.ntotal != self.count:
            raise ValueError("the ivfpq lists and the row table disagree on the number of vectors")
        # dead rows were removed from the lists before saving: results need no filter

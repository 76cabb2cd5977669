"""Where the relevant results end: a cut at the score gap after the top hits.

A fixed score threshold fails across queries (CLIP cosines of true matches sit near 0.3 for one
query and 0.2 for another), so the cut adapts to each query's own scores: results are cut after
the largest drop between neighbours, when that drop stands out from the typical drop among the
results (``GAP_RATIO`` times the median gap). A list without such a drop is kept whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GAP_RATIO = 4.0
"""A drop counts as the end of the relevant results when it is this many times the median drop."""
MAX_SCAN = 100
"""Only the first results are examined: far down the list every drop is noise."""


def score_gap_cutoff(
    scores: Sequence[float],
    *,
    min_keep: int = 1,
    max_scan: int = MAX_SCAN,
    ratio: float = GAP_RATIO,
) -> int:
    """How many of ``scores`` (sorted best first) to keep."""
    s = np.asarray(scores[:max_scan], dtype=np.float64)
    if len(s) <= min_keep + 1:
        return len(scores)
    gaps = s[:-1] - s[1:]
    median = float(np.median(gaps))
    candidates = gaps[min_keep - 1 :]
    best = int(np.argmax(candidates)) + min_keep - 1
    if gaps[best] <= max(ratio * median, 1e-9):
        return len(scores)
    return best + 1

"""Reciprocal-rank fusion (RRF): merge ranked lists from rankers whose scores do not compare.

Why ranks and not scores: a CLIP cosine, a MiniLM cosine and an FTS5 bm25 value live on
different scales with different spreads (CLIP text-to-image cosines sit near 0.2-0.3, MiniLM
paraphrases near 0.4-0.8, bm25 is unbounded and grows with rare words), and they drift with every
model and collection. Calibrating them would need labelled queries we do not have. A rank means
the same thing for every ranker, so we fuse ranks (Cormack, Clarke and Buettcher, SIGIR 2009):

    rrf(d) = sum_i  w_i / (k + rank_i(d))          rank_i counts from 1; absent lists add 0

``k = 60`` is the constant from that paper and the default of Elasticsearch, OpenSearch and
Vespa. It damps the head of each list, so one ranker's first place cannot outvote agreement
between the others, while rank 1 still beats rank 10 clearly (1/61 vs 1/70).

Two refinements, both optional:

* **Coverage.** Some rankers cannot judge some items (a text model never sees a photo). Summing
  would then favour items that more rankers can see, whatever their relevance. With ``covers``,
  an item's score is the weighted *mean* over the rankers that cover it, so an item ranked first
  by every ranker that can judge it gets the same score, whatever its kind. An item that a
  covering ranker did not return still counts there as 0: that ranker judged it irrelevant.
* **Normalisation.** Scores are multiplied by ``k + 1`` so they lie in (0, 1]: 1.0 means first
  in every list that covers the item. This is a constant factor; the order is unchanged.

Ties in the input: when a ranking carries scores, equal scores share the best rank of their group
("1224" competition ranking), so an arbitrary order among equal scores never leaks into the
fusion. Ties in the output are broken by more lists containing the item, then the best single
rank, then first appearance (rankers in the order given), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

RRF_K = 60
"""The RRF damping constant (Cormack et al. 2009); see the module docstring."""


@dataclass(frozen=True)
class Ranking:
    """One ranker's answer, best first; ``scores`` (same length) only serve to detect ties."""

    ids: Sequence[int]
    scores: Sequence[float] | None = None


@dataclass(frozen=True)
class Fused:
    """One fused item: its score and its 1-based rank in each list that returned it."""

    id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)


def ranks_of(ranking: Ranking | Sequence[int]) -> dict[int, int]:
    """id -> 1-based rank; repeated ids keep their best rank; equal scores share a rank."""
    if not isinstance(ranking, Ranking):
        ranking = Ranking(ranking)
    scores = ranking.scores
    if scores is not None and len(scores) != len(ranking.ids):
        raise ValueError(f"{len(ranking.ids)} ids but {len(scores)} scores in one ranking")
    out: dict[int, int] = {}
    rank = 0
    for pos, item in enumerate(ranking.ids):
        if scores is None or pos == 0 or scores[pos] != scores[pos - 1]:
            rank = pos + 1
        out.setdefault(int(item), rank)
    return out


def reciprocal_rank_fusion(
    rankings: Mapping[str, Ranking | Sequence[int]],
    *,
    weights: Mapping[str, float] | None = None,
    k: int = RRF_K,
    covers: Callable[[int], Collection[str]] | None = None,
    normalise: bool = True,
) -> list[Fused]:
    """Fuse named rankings into one list, best first (see the module docstring for the maths).

    ``weights`` default to 1.0 per ranker. ``covers(id)`` names the rankers able to judge an
    item (default: all of them); an item's score is then the weighted mean over those rankers.
    """
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, not {k}")
    weights = dict(weights or {})
    unknown = set(weights) - set(rankings)
    if unknown:
        raise ValueError(f"weights given for rankers that are not in the fusion: {sorted(unknown)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"RRF weights must be >= 0, got {weights}")
    ranks = {name: ranks_of(r) for name, r in rankings.items()}
    first_seen: dict[int, int] = {}
    for per in ranks.values():
        for item in per:
            first_seen.setdefault(item, len(first_seen))

    fused = []
    for item in first_seen:
        judges = list(rankings) if covers is None else [n for n in rankings if n in covers(item)]
        total = sum(weights.get(n, 1.0) for n in judges)
        got = {n: ranks[n][item] for n in judges if item in ranks[n]}
        if total <= 0 or not any(weights.get(n, 1.0) > 0 for n in got):
            continue  # only returned by rankers that cannot judge it or that weigh 0
        score = sum(weights.get(n, 1.0) / (k + r) for n, r in got.items())
        if covers is not None or normalise:
            score /= total  # a weighted mean; without `covers` this only rescales
        if normalise:
            score *= k + 1
        fused.append(Fused(item, score, got))
    fused.sort(key=lambda f: (-f.score, -len(f.ranks), min(f.ranks.values()), first_seen[f.id]))
    return fused

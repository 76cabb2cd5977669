"""Fold adjacent moments of one video or recording into its best one, and a picture's read words
(``ocr``) into the picture, so one file can't flood a page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmsearch.results import Moment

if TYPE_CHECKING:
    from mmsearch.query.stages import Candidate

GROUP_GAP_S = 5.0
"""Hits of one file whose time spans are this close are shown as one hit."""
STILL_KINDS = frozenset({"image", "ocr"})
"""A picture and the words read in it: one hit per file."""


def group_adjacent(hits: list[Candidate], gap_s: float = GROUP_GAP_S) -> list[Candidate]:
    """Hits arrive best first; each folded hit joins the best hit of its file and stretch of time.

    The kept hit keeps its own span and score (the moment to seek to); the folded neighbours are
    listed in its ``moments``. Among a video's keyframes the one closest to the query (its CLIP
    cosine) is the moment to seek to, at the group's place: a reranker that moved a near-copy
    of another file's scene down (``mmr``) must not send the user to the neighbouring scene.
    """
    out: list[Candidate] = []
    reach: list[tuple[float, float] | None] = []  # time range covered by each kept group
    still_of: dict[str, Candidate] = {}  # the kept picture (or its words) of each file
    for hit in hits:
        rec = hit.record
        if rec.start_s is None:
            kept = still_of.get(rec.path) if rec.kind in STILL_KINDS else None
            if kept is not None:
                kept.moments.append(Moment(rec.id, None, None))
            else:
                out.append(hit)
                reach.append(None)
                if rec.kind in STILL_KINDS:
                    still_of.setdefault(rec.path, hit)
            continue
        end = rec.end_s if rec.end_s is not None else rec.start_s
        for i, kept in enumerate(out):
            span = reach[i]
            if span is None or kept.record.path != rec.path or kept.record.kind != rec.kind:
                continue
            if rec.start_s <= span[1] + gap_s and span[0] <= end + gap_s:
                if rec.kind == "keyframe" and hit.relevance > kept.relevance:
                    out[i] = _seek_to(hit, kept)
                else:
                    kept.moments.append(Moment(rec.id, rec.start_s, rec.end_s))
                reach[i] = (min(span[0], rec.start_s), max(span[1], end))
                break
        else:
            out.append(hit)
            reach.append((rec.start_s, end))
    return out


def _seek_to(better: Candidate, kept: Candidate) -> Candidate:
    """`better` becomes the group's moment, at the place and with the shown score of `kept`."""
    rec = kept.record
    better.moments = [*kept.moments, Moment(rec.id, rec.start_s, rec.end_s), *better.moments]
    better.score, better.placed = kept.score, kept.placed
    return better

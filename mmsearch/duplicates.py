"""Near-duplicate files: bursts, re-encodes and resized copies, found from the stored vectors.

Each picture's nearest neighbours come from the collection's vector store (the same ANN index
that serves searches, restricted to the wanted kinds), pairs above a cosine threshold are
joined with union-find, and each group lists its files in the order they were indexed. Nothing is
re-encoded and no file is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mmsearch.errors import QueryError

if TYPE_CHECKING:
    from mmsearch.store import Collection

NEIGHBOURS = 16
"""Neighbours examined per item: a group larger than this is still found through its members."""
BATCH = 1024


@dataclass(frozen=True)
class DuplicateGroup:
    """Files whose pictures are near-identical; ``similarity`` is the lowest linking cosine."""

    paths: tuple[str, ...]
    item_ids: tuple[int, ...]
    similarity: float

    def to_dict(self) -> dict:
        return {
            "paths": list(self.paths),
            "item_ids": list(self.item_ids),
            "similarity": self.similarity,
        }


def find_duplicates(
    collection: Collection, *, threshold: float = 0.95, types: frozenset[str] = frozenset({"image"})
) -> list[DuplicateGroup]:
    """Groups of items (one per file) whose vectors are within ``threshold`` cosine, largest first."""
    if not 0.0 < threshold <= 1.0:
        raise QueryError(f"The duplicate threshold is a cosine in (0, 1], not {threshold}.")
    from mmsearch.query.model import Filters

    allowed = collection.catalog.filtered_item_ids(Filters(types=types))
    if allowed is None or not len(allowed):
        return []
    store = collection.vectors
    parent = {int(i): int(i) for i in allowed}
    link: dict[int, float] = {}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    k = min(NEIGHBOURS + 1, len(allowed))
    for start in range(0, len(allowed), BATCH):
        ids, vecs = store.vectors(allowed[start : start + BATCH])
        scores, found = store.search(vecs, k, allowed)
        for i, row_s, row_i in zip(ids.tolist(), scores, found):
            for s, j in zip(row_s.tolist(), row_i.tolist()):
                if j < 0 or j == i or s < threshold:
                    continue
                a, b = root(i), root(j)
                if a != b:
                    parent[b] = a
                    link[a] = min(link.get(a, 1.0), link.get(b, 1.0), float(s))
                else:
                    link[a] = min(link.get(a, 1.0), float(s))
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(root(i), []).append(i)
    groups = [(r, m) for r, m in members.items() if len(m) > 1]
    records = {r.id: r for r in collection.catalog.items_by_ids([i for _, m in groups for i in m])}
    by_files: dict[tuple[str, ...], DuplicateGroup] = {}  # one group per set of files
    for r, ids in groups:
        by_path: dict[str, int] = {}
        for i in sorted(ids):
            if i in records:
                by_path.setdefault(records[i].path, i)
        if len(by_path) < 2:
            continue
        group = DuplicateGroup(tuple(by_path), tuple(by_path.values()), round(link.get(r, 1.0), 4))
        seen = by_files.get(group.paths)  # two videos link once per shared keyframe: one group
        if seen is not None:
            group = replace(seen, similarity=min(seen.similarity, group.similarity))
        by_files[group.paths] = group
    return sorted(by_files.values(), key=lambda g: (-len(g.paths), g.paths))

"""Diversity (the `mmr` reranker): distinct scenes on the first page, and the relevance it costs.

    python benchmarks/diversity.py                  # 300 photos, 30 of them shot in bursts of 5

A gallery of rendered photos in which some scenes were "shot in a burst": four more copies of
the same scene, each slightly brighter, re-encoded or resized, like a phone's burst mode. Each
burst scene gives a Measured at k = 10 with and without `mmr`:

- distinct scenes on the first page (copies of one scene count once);
- precision@10: results the query truly describes (the relevance diversity costs), and how many
  distinct relevant scenes the page shows;
- recall of the scene itself: the burst's scene is still on the first page.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, set_torch_threads, stamp  # noqa: E402


def build(root: Path, photos: int, bursts: int):
    from PIL import Image, ImageEnhance

    from mmsearch import Engine, IndexOptions
    from mmsearch.synth.media import write_photo_folder

    folder = write_photo_folder(root / "photos", photos, seed=77)
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    scene_of, caption_of = {}, {}
    for i, row in enumerate(rows):
        path = str((folder / row["path"]).resolve())
        scene_of[path], caption_of[path] = i, row
    queries = []
    for i, row in enumerate(rows[:bursts]):
        source = folder / row["path"]
        image = Image.open(source).convert("RGB")
        for j in range(4):
            shot = ImageEnhance.Brightness(image).enhance(1.0 + 0.03 * (j + 1))
            if j % 2:
                shot = shot.resize((shot.width * 9 // 10, shot.height * 9 // 10))
            copy = folder / f"burst_{i:03d}_{j}.jpg"
            shot.save(copy, quality=88)
            scene_of[str(copy.resolve())], caption_of[str(copy.resolve())] = i, row
        queries.append((min(row["captions"], key=len), i))  # a broad query: one object of it
    with Engine(root / "home", "tiny") as e:
        e.index([folder], options=IndexOptions(in_process=True))
    return root / "home", scene_of, caption_of, queries


def describes(caption: str, row: dict) -> bool:
    """Whether a caption truly describes a rendered photo (its own, or a truthful one)."""
    return caption in row.get("captions", [row["caption"]])


def measure(engine, queries, scene_of, caption_of, rerank) -> dict:
    distinct, precision, relevant_scenes, found = [], [], [], []
    for q, own in queries:
        hits = engine.search(q, k=10, rerank=rerank)
        scenes = [scene_of[h.path] for h in hits]
        distinct.append(len(set(scenes)))
        good = [describes(q, caption_of[h.path]) for h in hits]
        precision.append(sum(good) / 10)
        relevant_scenes.append(len({s for s, g in zip(scenes, good) if g}))
        found.append(own in scenes)
    n = len(queries)
    return {
        "distinct_scenes_top10": round(sum(distinct) / n, 2),
        "precision_at_10": round(sum(precision) / n, 3),
        "relevant_distinct_scenes_top10": round(sum(relevant_scenes) / n, 2),
        "own_scene_on_page": round(sum(found) / n, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--bursts", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS / "diversity.json")
    args = ap.parse_args(argv)
    set_torch_threads(1)
    from mmsearch import Engine

    with tempfile.TemporaryDirectory() as tmp:
        home, scene_of, caption_of, queries = build(Path(tmp), args.photos, args.bursts)
        with Engine(home) as engine:
            without = measure(engine, queries, scene_of, caption_of, ("none",))
            with_mmr = measure(engine, queries, scene_of, caption_of, ("mmr",))
    for label, m in (("without mmr", without), ("with mmr", with_mmr)):
        print(
            f"{label:>12}: {m['distinct_scenes_top10']} distinct scenes in the top 10 "
            f"({m['relevant_distinct_scenes_top10']} of them relevant), P@10 {m['precision_at_10']}, "
            f"the burst's scene on the page {m['own_scene_on_page']}"
        )
    row = stamp({"photos": args.photos, "bursts": args.bursts, "without": without, "with_mmr": with_mmr})
    print(device_label(row["device"]))
    append_results(args.out, [row])
    return row


if __name__ == "__main__":
    main()

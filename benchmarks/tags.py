"""Zero-shot tag precision and recall on the shapes world, and what tagging costs.

    python benchmarks/tags.py                  # 600 rendered photos, tiny, the shipped vocabulary
    python benchmarks/tags.py --photos 200 --out /tmp/t.json

The photos are rendered with their labels (`write_photo_folder`, seed 2026: not the seed the
thresholds were chosen on) and indexed through `Engine.index` with `tiny`, which tags every
picture from its stored vector at the end of the run. A tag is right when the picture holds an
object of that colour or shape. Reported per group (colour, shape) and overall, micro-averaged
over (picture, tag) pairs; then the time tagging took inside the index run and the time to
re-tag the whole collection for a new vocabulary (`Engine.use_tag_vocabulary`, stored vectors
only, no picture is encoded). Results are appended to benchmarks/results/tags.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, measure_and_record, set_torch_threads  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    from mmsearch import Engine, IndexOptions
    from mmsearch.synth.media import write_photo_folder

    threads = set_torch_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = write_photo_folder(root / "photos", args.photos, seed=args.seed)
        labels = {
            str((photos / row["path"]).resolve()): row["labels"]["objects"]
            for row in map(json.loads, (photos / "captions.jsonl").read_text().splitlines())
        }
        with Engine(root / "home", args.model) as engine:
            summary = engine.index([photos], options=IndexOptions(in_process=True))
            vocabulary = engine.tag_vocabulary()
            catalog = engine.collection.catalog
            ids = catalog.item_ids()
            paths = {r.id: r.path for r in catalog.items_by_ids(ids)}
            predicted = {
                (paths[i], tag) for i, row in catalog.tags_of(ids).items() for tag, _ in row
            }
            started = time.perf_counter()
            retagged = engine.use_tag_vocabulary(vocabulary)  # same words: a full re-tag
            retag_s = time.perf_counter() - started
    result = {
        "model": args.model,
        "photos": args.photos,
        "seed": args.seed,
        "torch_threads": threads,
        "vocabulary": len(vocabulary),
        "tagged_in_index_run": summary.tagged,
        "tag_seconds_in_index_run": round(summary.tag_seconds, 3),
        "index_seconds": round(summary.seconds, 2),
        "retag_seconds": round(retag_s, 3),
        "retagged": retagged,
        "groups": {},
    }
    for group, indices in {**vocabulary.groups, "all": list(range(len(vocabulary)))}.items():
        names = {vocabulary.names[i] for i in indices}
        truth = {
            (path, tag)
            for path, objects in labels.items()
            for tag in names
            if any(tag in (o["colour"], o["shape"]) for o in objects)
        }
        mine = {(p, t) for p, t in predicted if t in names}
        hit = len(mine & truth)
        result["groups"][group] = {
            "precision": round(hit / max(len(mine), 1), 3),
            "recall": round(hit / max(len(truth), 1), 3),
            "tags_per_picture": round(len(mine) / len(labels), 2),
        }
    return result


def report(result: dict) -> None:
    print(
        f"{result['photos']} photos, {result['model']}, {result['vocabulary']} tags "
        f"({result['torch_threads']} torch threads)"
    )
    print(f"{'group':<10}{'precision':>11}{'recall':>9}{'tags/picture':>14}")
    for group, g in result["groups"].items():
        print(f"{group:<10}{g['precision']:>11.3f}{g['recall']:>9.3f}{g['tags_per_picture']:>14.2f}")
    per_1k = 1000 * result["tag_seconds_in_index_run"] / max(result["tagged_in_index_run"], 1)
    print(
        f"tagging inside the index run: {result['tag_seconds_in_index_run']} s for "
        f"{result['tagged_in_index_run']} pictures ({per_1k:.2f} s per 1,000; the whole run "
        f"{result['index_seconds']} s)"
    )
    print(f"re-tagging everything for a new vocabulary: {result['retag_seconds']} s, no picture encoded")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "tags.json")
    return measure_and_record(run, report, parser.parse_args(argv))


if __name__ == "__main__":
    main()

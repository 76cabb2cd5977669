"""Colour+shape queries on rendered photos through `Engine.search`: precision@5 with and without `itm`.

    python benchmarks/rerank_photos.py                # 200 photos (seed 3), tiny + tiny-itm
    python benchmarks/rerank_photos.py --photos 80 --out /tmp/p.json

Unlike `rerank_itm.py` (compositional captions against look-alike twins, model calls alone),
this goes through the whole read path on the sample-photo renderer (`write_photo_folder`, the
demo's photos): every "a <colour> <shape>" query with at least three relevant photos, top 5 with
`--rerank none` and with `--rerank itm`. A photo is relevant when it holds an object of that
colour and shape. Results are appended to benchmarks/results/rerank_photos.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, set_torch_threads, stamp  # noqa: E402

K = 5


def run(args: argparse.Namespace) -> dict:
    from mmsearch import Engine, IndexOptions
    from mmsearch.synth import vocab
    from mmsearch.synth.media import write_photo_folder

    threads = set_torch_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_photo_folder(Path(tmp) / "photos", args.photos, seed=args.seed)
        labels = {
            row["path"]: row["labels"]["objects"]
            for row in map(json.loads, (photos / "captions.jsonl").read_text().splitlines())
        }
        precision: dict[str, list[float]] = {"none": [], "itm": []}
        with Engine(Path(tmp) / "home", "tiny") as engine:
            engine.index([photos], options=IndexOptions(in_process=True))
            for colour, shape in itertools.product(vocab.COLOURS, vocab.SHAPES):
                relevant = {
                    p for p, objects in labels.items()
                    if any(o["colour"] == colour and o["shape"] == shape for o in objects)
                }  # fmt: skip
                if len(relevant) < 3:
                    continue
                query = f"{vocab.article(colour)} {colour} {shape}"
                for reranker in precision:
                    hits = engine.search(query, k=K, rerank=(reranker,), user=None)
                    precision[reranker].append(sum(Path(h.path).name in relevant for h in hits) / K)
    return {
        "photos": args.photos,
        "seed": args.seed,
        "queries": len(precision["none"]),
        "torch_threads": threads,
        f"P@{K}_clip": round(sum(precision["none"]) / len(precision["none"]), 3),
        f"P@{K}_itm": round(sum(precision["itm"]) / len(precision["itm"]), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank_photos.json")
    args = parser.parse_args(argv)
    result = stamp(run(args))
    print(
        f"{result['queries']} colour+shape queries over {result['photos']} rendered photos: "
        f"P@{K} {result[f'P@{K}_clip']:.3f} with CLIP alone, {result[f'P@{K}_itm']:.3f} with itm"
    )
    print(f"measured on {device_label(result['device'])}, load average {result['load_avg_1m']}")
    append_results(args.out, [result])
    return result


if __name__ == "__main__":
    main()

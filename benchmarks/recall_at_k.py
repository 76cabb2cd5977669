"""Recall@k on a captioned image folder, by brute force and through the engine (catalog + index).

The engine runs on an approximate index (HNSW unless `--index-kind` says otherwise), so
"the engine loses no recall" is measured where it could fail: exact search matches brute force
by construction. At a few hundred images HNSW's beam (efSearch 128) reaches nearly every vector;
`search_latency.py` measures the same index against exact search at 100k.

Takes the layout users have for Flickr30k/COCO: an image folder plus a captions file (CSV with
`path,caption` columns, or JSONL with `path` and `caption` keys; several rows per image are fine).
A JSONL row may also list `captions`: every caption true of that image (the shapes world has
repeated captions, so "a red circle" is a hit on any image with a red circle).

    python benchmarks/recall_at_k.py --render 500 --model tiny          # held-out shapes world
    python benchmarks/recall_at_k.py --images flickr30k/ --captions captions.csv --model ViT-B-32/laion2b_s34b_b79k

Prints a table and appends JSON (default benchmarks/results/recall_<model>.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, stamp  # noqa: E402

KS = (1, 5, 10)


def relevance(
    rows: list[dict], images: list[str]
) -> tuple[list[str], list[set[int]], list[set[int]]]:
    """Queries (unique captions), the images each describes, and each image's true caption ids."""
    pos = {p: i for i, p in enumerate(images)}
    truths: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        for cap in {r["caption"], *r.get("captions", [])}:  # its own caption always counts
            truths[cap].add(pos[r["path"]])
    queries = sorted({r["caption"] for r in rows})
    q_rel = [truths[q] for q in queries]
    img_rel: list[set[int]] = [set() for _ in images]
    for qi, rel in enumerate(q_rel):
        for i in rel:
            img_rel[i].add(qi)
    return queries, q_rel, img_rel


def main(argv: list[str] | None = None) -> dict:
    from mmsearch import Engine
    from mmsearch.query.exact import exact_topk
    from mmsearch.query.metrics import recall_at_k
    from mmsearch.train.captions import read_captions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="image folder")
    ap.add_argument(
        "--captions",
        type=Path,
        help="CSV or JSONL of path, caption (default: IMAGES/captions.jsonl)",
    )
    ap.add_argument(
        "--render",
        type=int,
        default=0,
        help="render this many held-out shapes-world photos instead",
    )
    ap.add_argument("--seed", type=int, default=500, help="seed of the rendered held-out set")
    ap.add_argument("--model", default="tiny")
    ap.add_argument(
        "--precision", default="auto", help="encoder numerics: auto, fp32, bf16 (a cast model)"
    )
    ap.add_argument(
        "--rerank",
        default="none",
        help="rerankers for the engine's queries, comma-separated ('none': the index alone; "
        "'default': the collection's)",
    )
    ap.add_argument(
        "--index-kind", default="hnsw", help="the engine's vector index: hnsw, ivf, flat, ..."
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mmsearch-recall-"))
    if args.render:
        from mmsearch.synth.media import write_photo_folder

        args.images = write_photo_folder(work / "photos", args.render, seed=args.seed)
    if args.images is None:
        ap.error("give --images (and --captions) or --render N")
    captions_file = args.captions or args.images / "captions.jsonl"
    rows = read_captions(captions_file)
    images = sorted({r["path"] for r in rows})
    queries, q_rel, img_rel = relevance(rows, images)

    engine = Engine(
        home=work / "home", model=args.model, index_kind=args.index_kind, precision=args.precision
    )
    enc = engine.encoder
    t0 = time.perf_counter()
    from indexer.sources.image import read_image

    # decoded exactly as the indexer decodes, so the comparison isolates catalog + index
    decoded = [
        read_image(args.images / p, target_size=enc.image_size).items[0].image for p in images
    ]
    img_vecs = enc.encode_images(decoded)
    txt_vecs = enc.encode_texts(queries)
    brute_s = time.perf_counter() - t0
    _, t2i = exact_topk(txt_vecs, img_vecs, max(KS))
    _, i2t = exact_topk(img_vecs, txt_vecs, max(KS))
    brute = {
        "text_to_image": recall_at_k(t2i, q_rel, KS),
        "image_to_text": recall_at_k(i2t, img_rel, KS),
    }

    # the same queries through the engine: scan, decode, catalog, vector index, search
    t0 = time.perf_counter()
    summary = engine.index([args.images])
    index_s = time.perf_counter() - t0
    pos = {str((args.images / p).resolve()): i for i, p in enumerate(images)}
    t0 = time.perf_counter()
    engine_ids = []
    rerank = None if args.rerank == "default" else tuple(args.rerank.split(","))
    for q in queries:
        hits = engine.search(q, max(KS), types=["image"], group=False, rerank=rerank)
        engine_ids.append(
            [pos.get(str(Path(h.path).resolve()), -1) for h in hits] + [-1] * (max(KS) - len(hits))
        )
    query_s = time.perf_counter() - t0
    engine_ids = np.array(engine_ids)
    engine_recall = recall_at_k(engine_ids, q_rel, KS)
    same_top10 = float(
        np.mean([set(a) == set(b) for a, b in zip(engine_ids.tolist(), t2i.tolist())])
    )
    engine_index = engine.collection.vectors.kind
    engine.close()

    result = stamp(
        {
            "model": args.model,
            "precision": enc.precision,
            "dataset": str(captions_file)
            if not args.render
            else f"shapes world, {args.render} held-out photos, seed {args.seed}",
            "images": len(images),
            "queries": len(queries),
            "brute_force": brute,
            "engine_index": engine_index,
            "engine_rerank": args.rerank,
            "engine_text_to_image": engine_recall,
            "engine_matches_brute_force_top10": same_top10,
            "engine_recall_loss": {k: brute["text_to_image"][k] - engine_recall[k] for k in KS},
            "index_seconds": round(index_s, 2),
            "index_files_skipped": len(summary.skipped),
            "query_ms_mean": round(1000 * query_s / max(1, len(queries)), 2),
            "brute_force_encode_seconds": round(brute_s, 2),
        }
    )
    _print(result)
    out = args.out or RESULTS / f"recall_{args.model.replace('/', '_')}.json"
    append_results(out, [result])
    print(f"appended to {out}")
    return result


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"recall@k — {r['model']} on {r['dataset']} ({r['images']} images, {r['queries']} queries)"
    )
    t.add_column("direction")
    for k in KS:
        t.add_column(f"R@{k}", justify="right")
    t.add_row(
        "text→image (brute force)", *(f"{r['brute_force']['text_to_image'][k]:.3f}" for k in KS)
    )
    t.add_row(
        "image→text (brute force)", *(f"{r['brute_force']['image_to_text'][k]:.3f}" for k in KS)
    )
    t.add_row(
        f"text→image (engine, {r['engine_index']})",
        *(f"{r['engine_text_to_image'][k]:.3f}" for k in KS),
    )
    Console().print(t)
    print(
        f"engine top-10 equals brute-force top-10 for {r['engine_matches_brute_force_top10']:.1%} of queries; "
        f"mean query {r['query_ms_mean']} ms; indexing {r['index_seconds']} s; "
        f"on {device_label(r['device'])}"
    )


if __name__ == "__main__":
    main()

"""bf16 against fp32: do the two precisions rank the same pictures, and how much faster is bf16?

    python benchmarks/precision_agreement.py                        # tiny, 400 rendered photos
    python benchmarks/precision_agreement.py --model ViT-B-32/random --photos 200

Encodes the same rendered photos and captions with the model in fp32 and cast to bf16 (the
CPU path `--precision bf16` takes), then reports the top-10 agreement of text->image searches
(mean overlap of the two top-10 sets, and the share of identical top-10 sets), the cosine
between each picture's two vectors, and each precision's encode rate on this CPU. Whether the CPU
computes bf16 natively (AMX / AVX-512 BF16) is recorded: without it bf16 is emulated and slow, so
`--precision auto` keeps fp32 there. Appends to benchmarks/results/precision_agreement.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, stamp  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import torch

    from indexer.sources.image import read_image
    from mmsearch.models import load_encoder
    from mmsearch.models.device import cpu_flags, cpu_has_native_bf16
    from mmsearch.query.exact import exact_topk
    from mmsearch.synth.media import write_photo_folder
    from mmsearch.train.captions import read_captions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "precision_agreement.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    folder = write_photo_folder(
        Path(tempfile.mkdtemp(prefix="mmsearch-bf16-")) / "photos", args.photos, seed=args.seed
    )
    rows = read_captions(folder / "captions.jsonl")
    images = sorted({r["path"] for r in rows})
    queries = sorted({r["caption"] for r in rows})
    vectors, rates = {}, {}
    for precision in ("fp32", "bf16"):
        enc = load_encoder(args.model, device="cpu", precision=precision)
        pictures = [
            read_image(folder / p, target_size=enc.image_size).items[0].image for p in images
        ]
        batch = torch.stack([enc.preprocess(p) for p in pictures])
        enc.encode_images(batch[:8])  # warm-up
        t0 = time.perf_counter()
        img = enc.encode_images(batch, batch_size=64)
        rates[precision] = len(images) / (time.perf_counter() - t0)
        vectors[precision] = (img, enc.encode_texts(queries))
    (i32, t32), (i16, t16) = vectors["fp32"], vectors["bf16"]
    k = min(10, len(images))
    _, top32 = exact_topk(t32, i32, k)
    _, top16 = exact_topk(t16, i16, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top32.tolist(), top16.tolist())]
    result = stamp(
        {
            "model": args.model,
            "photos": len(images),
            "queries": len(queries),
            "cpu_native_bf16": cpu_has_native_bf16(),
            "cpu_bf16_flags": sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}),
            "top10_mean_overlap": round(float(np.mean(overlap)), 4),
            "top10_identical_share": round(float(np.mean([o == 1.0 for o in overlap])), 4),
            "picture_cosine_min": round(float((i32 * i16).sum(1).min()), 5),
            "picture_cosine_mean": round(float((i32 * i16).sum(1).mean()), 5),
            "images_per_s": {p: round(r, 1) for p, r in rates.items()},
            "threads": args.threads,
        }
    )
    for key, value in result.items():
        print(f"{key:24} {value}")
    append_results(args.out, [result])
    print(f"appended to {args.out}")
    return result


if __name__ == "__main__":
    main()

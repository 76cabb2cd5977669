"""bf16 and int8 against fp32: do the precisions rank the same pictures, and how much faster are they?

    python benchmarks/precision_agreement.py                        # tiny, 400 rendered photos
    python benchmarks/precision_agreement.py --model ViT-B-32/random --photos 200
    python benchmarks/precision_agreement.py --precisions int8      # only fp32 vs int8

Encodes the same rendered photos and captions with the model in fp32, cast to bf16 (the CPU path
`--precision bf16` takes) and with an int8 image tower (`--precision int8`), then reports for
each against fp32 the top-10 agreement of text->image searches (mean overlap of the two top-10
sets, and the share of identical top-10 sets), the cosine between each picture's two vectors,
and each precision's encode rate on this CPU. Whether the CPU computes bf16 natively (AMX /
AVX-512 BF16) is recorded: without it bf16 is emulated and slow. Appends to
benchmarks/results/precision_agreement.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_and_append, stamp, top_k_agreement  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import torch

    from indexer.sources.image import read_image
    from mmsearch.errors import ConfigError
    from mmsearch.models import load_encoder
    from mmsearch.models.device import cpu_flags, cpu_has_native_bf16
    from mmsearch.synth.media import write_photo_folder
    from mmsearch.train.captions import read_captions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precisions",
        default=None,
        help="compared with fp32, comma-separated (default: bf16,int8 on a CPU with native bf16, "
        "else int8: emulated bf16 is slow)",
    )
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
    wanted = args.precisions or ("bf16,int8" if cpu_has_native_bf16() else "int8")
    others = [p.strip() for p in wanted.split(",") if p.strip() and p.strip() != "fp32"]
    not_applicable = {}
    for precision in ("fp32", *others):
        try:
            enc = load_encoder(args.model, device="cpu", precision=precision).load()
        except ConfigError as exc:  # int8 on a ResNet tower (tiny): said, not compared
            not_applicable[precision] = str(exc)
            continue
        pictures = [
            read_image(folder / p, target_size=enc.image_size).items[0].image for p in images
        ]
        batch = torch.stack([enc.preprocess(p) for p in pictures])
        enc.encode_images(batch[:8])  # warm-up
        t0 = time.perf_counter()
        img = enc.encode_images(batch, batch_size=64)
        rates[precision] = len(images) / (time.perf_counter() - t0)
        vectors[precision] = (img, enc.encode_texts(queries))
    i32, t32 = vectors["fp32"]
    against_fp32 = {}
    for precision in (p for p in others if p in vectors):
        i_other, t_other = vectors[precision]
        against_fp32[precision] = {
            **top_k_agreement(t32, i32, i_other),
            "text_cosine_min": round(float((t32 * t_other).sum(1).min()), 5),
        }
    result = stamp(
        {
            "model": args.model,
            "photos": len(images),
            "queries": len(queries),
            "cpu_native_bf16": cpu_has_native_bf16(),
            "cpu_bf16_flags": sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}),
            "against_fp32": against_fp32,
            "not_applicable": not_applicable,
            "images_per_s": {p: round(r, 1) for p, r in rates.items()},
            "threads": args.threads,
        }
    )
    return print_and_append(result, args.out)


if __name__ == "__main__":
    main()

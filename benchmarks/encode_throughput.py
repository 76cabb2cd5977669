"""Encoder throughput: images/s and single-query text latency, at random init (weights don't change speed).

    python benchmarks/encode_throughput.py --model ViT-B-32/random --images 512
    python benchmarks/encode_throughput.py --model tiny --device cpu

Prints measured figures and appends them to benchmarks/results/encode_throughput.json with the date and the measured device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, stamp  # noqa: E402


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    import torch

    from mmsearch.models import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32/random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=256, help="images per timed run")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS / "encode_throughput.json")
    args = ap.parse_args(argv)

    enc = load_encoder(args.model, device=args.device)
    s = enc.image_size
    batch = torch.randn(args.images, 3, s, s)
    enc.encode_images(batch[: args.batch_size], batch_size=args.batch_size)  # warm-up
    _sync(enc.device)
    t0 = time.perf_counter()
    enc.encode_images(batch, batch_size=args.batch_size)
    _sync(enc.device)
    img_s = time.perf_counter() - t0
    enc.encode_texts(["warm up"])
    lat = []
    for i in range(args.queries):
        t0 = time.perf_counter()
        enc.encode_texts([f"a photo of a red car number {i}"])
        _sync(enc.device)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    result = stamp(
        {
            "ran_on": enc.device,
            "torch_threads": torch.get_num_threads(),
            "model": args.model,
            "precision": enc.precision,
            "images_per_s": round(args.images / img_s, 1),
            "batch_size": args.batch_size,
            "text_query_ms_p50": round(1000 * lat[len(lat) // 2], 2),
            "text_query_ms_p90": round(1000 * lat[int(len(lat) * 0.9)], 2),
        }
    )
    print(f"{result} on {device_label(result['device'])}")
    append_results(args.out, [result])
    return result


if __name__ == "__main__":
    main()

"""One GPU encoding actor's images/s: `indexer.ray_ingest.EncodeActor` as a Ray cluster with GPUs
runs it, called here directly, one row (one encoder batch of JPEG jobs) after another.

    python benchmarks/gpu/gpu_actor.py --images /tmp/jpegs --n 5000 --model ViT-B-32/random

Ray Data calls the actor with one row at a time (`batch_size=1`, one call in flight on the actor
at once); each call decodes its JPEGs on the actor's device (`BatchJpegDecoder`: nvjpeg, the EXIF
turn and the letterbox on the GPU) and then encodes them. `--calls 2` runs two calls at once, as
a threaded actor would (one row decoding while the other encodes): whether that is worth building
is for the figure to say. What this leaves out is Ray's own
transport (pickled rows through the object store), because Ray's wheel does not fit what a device
machine can be sent: the figure is the actor's ceiling. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--model", default="ViT-B-32/random")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--batch-size", type=int, default=0, help="files per row (0: the device's default)"
    )
    ap.add_argument(
        "--calls", type=int, default=1,
        help="calls on the actor at once (1: as Ray Data runs it; 2: what a threaded actor would give)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    import torch

    from indexer.encoding import is_encoded
    from indexer.pipeline import IndexOptions, encoder_batch, stores_patches_by_default
    from indexer.ray_ingest import EncodeActor
    from indexer.sources import SOURCES
    from indexer.workers import Decoded, DecodeJob
    from mmsearch.models import registry

    batch = encoder_batch(args.device, args.batch_size)
    started = time.perf_counter()
    spec = registry.resolve(args.model)
    actor = EncodeActor(
        spec, args.device, args.precision, threads=1, batch_size=batch,
        store_patches=stores_patches_by_default(spec.name),  # as an index run decides
    )  # fmt: skip
    actor.jpeg_config = IndexOptions().worker_config(actor.encoder.preprocess)
    load_s = time.perf_counter() - started
    files = sorted(args.images.glob("*.jpg"))[: args.n]
    jobs = [DecodeJob(str(p), "image", SOURCES[".jpg"].reader) for p in files]
    rows = [jobs[i : i + batch] for i in range(0, len(jobs), batch)]

    def call(row: list[DecodeJob]) -> list:
        answer = actor({"batch": [pickle.dumps(row)]})
        return pickle.loads(answer["batch"][0])

    call(rows[0])  # warm-up: CUDA context, nvjpeg handles, the first forward pass at this size
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.calls)) as pool:  # each call decodes, then encodes its row
        answers = list(pool.map(call, rows))
    encoded = sum(isinstance(o, Decoded) and is_encoded(o) for a in answers for o in a)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {
        "what": "one EncodeActor (decode JPEGs on its device, then encode), called without Ray",
        "model": args.model,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "precision": actor.encoder.precision,
        "files": len(jobs),
        "encoded": encoded,
        "rows_of": batch,
        "calls_at_once": max(1, args.calls),
        "actor_start_s": round(load_s, 2),
        "seconds": round(seconds, 3),
        "store_patches": actor.store_patches,
        "images_per_s": round(encoded / seconds, 1),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

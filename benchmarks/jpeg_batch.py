"""JPEGs decoded in batches on a device (`indexer.jpeg_batch`) against Pillow, and optionally encoded.

    python benchmarks/jpeg_batch.py --images /tmp/peers/images/seed1234 --n 1000 --device cpu
    python benchmarks/jpeg_batch.py --images DIR --device cuda --model ViT-B-32@CKPT   # a GPU

Times, over the same files, (1) Pillow's way as each worker process runs it (draft decode,
letterbox; one process, so per core) and (2) `BatchJpegDecoder` on `--device`: reading, hashing
and the header in reader threads, `decode_jpeg` in batches (nvjpeg on a GPU), the EXIF turn and
the letterbox on the device. With `--model`, (3) decoding and encoding overlapped as an index run
does them (the decoder's thread and stream beside the forward passes), without the catalog. It
also reports how far the device's encoder input is from Pillow's (grey levels). Without
`--images` it renders photos of the shapes world at 640x480. Appends to
benchmarks/results/jpeg_batch.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_and_append, stamp  # noqa: E402
from decode_draft import _jpegs  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import torch

    from indexer.jpeg_batch import BatchJpegDecoder, jpeg_backend
    from indexer.workers import Decoded, DecodeJob, InlineDecoder, WorkerConfig, decode
    from mmsearch.models.device import resolve_device
    from mmsearch.models.preprocess import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, ImagePreprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="a folder of JPEGs (default: render 640x480 photos)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=224, help="the encoder's input side")
    ap.add_argument("--batch", type=int, default=64, help="JPEGs per decode_jpeg call")
    ap.add_argument("--model", help="also encode, e.g. ViT-B-32@/path/ckpt.pt (then --size is the model's)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", type=Path, default=RESULTS / "jpeg_batch.json")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    encoder = None
    if args.model:
        from mmsearch.models import load_encoder

        encoder = load_encoder(args.model, device=device, precision=args.precision)
        preprocess = encoder.preprocess
    else:
        side = (args.size, args.size)
        preprocess = ImagePreprocess(side, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    config = WorkerConfig(preprocess=preprocess, image_size=max(preprocess.size))
    files = _jpegs(args.images, args.n)
    jobs = [DecodeJob(str(p), "image", "indexer.sources.image:read_image") for p in files]

    started = time.perf_counter()
    pillow = {j.path: decode(j, config) for j in jobs}
    pillow_s = time.perf_counter() - started

    def device_run(encode: bool) -> tuple[float, dict, int]:
        outcomes: dict = {}
        pending: list = []
        encoded = 0
        decoder = BatchJpegDecoder(config, device, InlineDecoder(config), 16 * args.batch, args.batch)
        t0 = time.perf_counter()
        with decoder:
            for outcome in decoder.run(jobs):
                if outcome is None:
                    continue
                outcomes[outcome.job.path] = outcome
                pending.append(outcome)
                if encode and len(pending) >= args.batch:
                    encoded += _encode(encoder, pending)
                    pending = []
            if encode and pending:
                encoded += _encode(encoder, pending)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return time.perf_counter() - t0, outcomes, decoder.on_device

    device_run(False)  # warm-up: CUDA context, nvjpeg handles, first allocations
    device_s, outcomes, on_device = device_run(False)
    differences = [
        np.abs(_host(o.items[0].pixels) - pillow[k].items[0].pixels.astype(np.int16)).mean()
        for k, o in outcomes.items()
        if isinstance(o, Decoded) and isinstance(pillow[k], Decoded)
    ]
    row = {
        "pictures": len(files),
        "device_used": device,
        "jpeg_backend": getattr(jpeg_backend(device), "name", "none: Pillow"),
        "torch_threads": torch.get_num_threads(),
        "pillow_one_process_images_per_s": round(len(files) / pillow_s, 1),
        "device_batches_images_per_s": round(len(files) / device_s, 1),
        "decoded_on_device": on_device,
        "input_vs_pillow_mean_abs_grey_levels": round(float(np.mean(differences)), 3),
    }
    if encoder is not None:
        device_run(True)  # warm-up of the forward pass at this batch size
        both_s, _, _ = device_run(True)
        row["model"] = args.model
        row["precision"] = encoder.precision
        row["decode_and_encode_images_per_s"] = round(len(files) / both_s, 1)
    row["command"] = "python benchmarks/jpeg_batch.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    return print_and_append(stamp(row), args.out)


def _encode(encoder, outcomes) -> int:
    from mmsearch.models.preprocess import stack_uint8

    pixels = [o.items[0].pixels for o in outcomes]
    batch = encoder.preprocess.normalise(stack_uint8(pixels))
    encoder.encode_images(batch, batch_size=len(pixels))
    return len(pixels)


def _host(pixels) -> np.ndarray:
    return np.asarray(pixels.cpu() if hasattr(pixels, "cpu") else pixels, dtype=np.int16)


if __name__ == "__main__":
    main()

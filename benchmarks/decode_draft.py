"""JPEG draft decoding: how much faster, and how far the encoder's input moves.

    python benchmarks/decode_draft.py --images /tmp/peers/images/seed1234 --n 300
    python benchmarks/decode_draft.py --size 64          # at tiny's input side

`read_image(path, target_size=S)` asks Pillow for a DCT-scaled decode (1/2, 1/4 or 1/8) that
keeps both sides >= S. This times, in one process, three ways to reach the encoder's letterboxed
uint8 input: a full decode, a draft that keeps both sides >= 2*S (what indexing did before), and
a draft that keeps them >= S (what it does now), each followed by the same shrink to at most
2*S and the same letterbox. It reports CPU milliseconds per picture and how far each input is
from the full decode's (mean and largest absolute difference, in grey levels). Without
`--images` it renders photos of the shapes world at 640x480. Appends to
benchmarks/results/decode_draft.json.
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

from _common import RESULTS, print_and_append, stamp  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from PIL import Image

    from mmsearch.models.preprocess import ImagePreprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="a folder of JPEGs (default: render 640x480 photos)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=224, help="the encoder's input side")
    ap.add_argument("--out", type=Path, default=RESULTS / "decode_draft.json")
    args = ap.parse_args(argv)

    files = _jpegs(args.images, args.n)
    pp = ImagePreprocess(size=(args.size, args.size), mean=(0.5,) * 3, std=(0.5,) * 3, mode="letterbox")
    bound = 2 * args.size

    def encoder_input(path: Path, draft: int | None) -> np.ndarray:
        with Image.open(path) as img:
            if draft:
                img.draft("RGB", (draft, draft))
            rgb = img.convert("RGB")
        if max(rgb.size) > bound:
            rgb.thumbnail((bound, bound), Image.Resampling.BICUBIC)
        return pp.to_uint8(rgb)

    ways = {"full": None, "draft_2x_target": bound, "draft_target": args.size}
    inputs, ms = {}, {}
    for name, draft in ways.items():
        encoder_input(files[0], draft)  # warm-up
        t0 = time.process_time()
        inputs[name] = [encoder_input(f, draft).astype(np.int16) for f in files]
        ms[name] = round((time.process_time() - t0) / len(files) * 1000, 2)
    differences = {
        name: {
            "mean_abs_grey_levels": round(float(np.mean([np.abs(a - b).mean() for a, b in zip(inputs[name], inputs["full"])])), 3),
            "max_abs_grey_levels": int(max(np.abs(a - b).max() for a, b in zip(inputs[name], inputs["full"]))),
        }
        for name in ways
        if name != "full"
    }
    with Image.open(files[0]) as first:
        source_size = list(first.size)
    result = stamp(
        {
            "pictures": len(files),
            "source_size": source_size,
            "target_size": args.size,
            "cpu_ms_per_picture": ms,
            "against_full_decode": differences,
            "command": "python benchmarks/decode_draft.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
    )
    return print_and_append(result, args.out)


def _jpegs(folder: Path | None, n: int) -> list[Path]:
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
        if not files:
            raise SystemExit(f"no JPEGs in {folder}")
        return files
    import random

    from mmsearch.synth import RenderStyle, render_scene, sample_scene

    out = Path(tempfile.mkdtemp(prefix="mmsearch-draft-"))
    files = []
    for i in range(n):
        rng = random.Random(i)
        path = out / f"photo_{i:04d}.jpg"
        render_scene(sample_scene(rng), (640, 480), RenderStyle(), rng).save(path, quality=90)
        files.append(path)
    return files


if __name__ == "__main__":
    main()

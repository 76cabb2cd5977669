"""Render N seeded, photo-like 640x480 JPEGs (quality 90, ~100-150 KB each) on every core.

    python benchmarks/gpu/make_jpegs.py --out /tmp/jpegs --n 20000

The same recipe as the peers harness's pictures (a smooth colour field, a few soft-edged shapes,
Gaussian grain), so decode costs compare with the CPU figures; written here because the device
machine gets only this repository. Files already there are kept (each is written whole or not at all).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 640, 480


def render(index: int, seed: int) -> Image.Image:
    rng = np.random.default_rng([seed, index])
    grid = (rng.random((int(rng.integers(3, 6)), int(rng.integers(3, 8)), 3)) * 255).astype(
        np.uint8
    )
    picture = Image.fromarray(grid, "RGB").resize((W, H), Image.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(-80, W)), int(rng.integers(-80, H))
        box = [x0, y0, x0 + int(rng.integers(30, 300)), y0 + int(rng.integers(30, 240))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(0, 2) else draw.rectangle)(box, fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.8, 2.0))))
    pixels = np.asarray(picture).astype(np.float32) + rng.normal(0.0, 12.0, (H, W, 3)).astype(
        np.float32
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_range(out: str, seed: int, start: int, stop: int) -> int:
    written = 0
    for index in range(start, stop):
        path = Path(out) / f"img_{index:06d}.jpg"
        if not path.exists():  # written whole or not at all, so a killed run leaves no half file
            partial = path.with_suffix(".part")
            render(index, seed).save(partial, "JPEG", quality=90)
            os.replace(partial, path)
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = os.cpu_count() or 1
    step = max(1, -(-args.n // (workers * 4)))
    with ProcessPoolExecutor(workers) as pool:
        ranges = [(i, min(args.n, i + step)) for i in range(0, args.n, step)]
        written = sum(
            pool.map(
                write_range,
                *zip(*[(str(args.out), args.seed, a, b) for a, b in ranges], strict=True),
            )
        )
    print(
        f"{written} JPEGs written ({args.n} in {args.out}) in {time.perf_counter() - started:.1f} s on {workers} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

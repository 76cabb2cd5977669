"""How many pictures a second the collection's one writer commits (catalog rows + vectors).

    python benchmarks/commit_rate.py                      # 5,000 pictures, batches of 32, 64, 256
    python benchmarks/commit_rate.py --patches            # with ViT-B-32-sized patch grids

Every index run commits on one thread, after each encoder batch: on a CPU the encoder is far
slower, but a GPU run's goal (6,000 pictures/s end to end) needs the writer faster than that too.
Each picture is one asset and one item with a 512-d vector and an 8 KB thumbnail (and with
`--patches` a 50 x 768 float16 patch grid), written through `CollectionWriter.write_many` as the
indexer writes them, into a fresh home. Appends to benchmarks/results/commit_rate.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_and_append, stamp  # noqa: E402


def pictures(n: int, patches: bool, seed: int = 0) -> list[tuple]:
    from mmsearch.catalog import AssetInfo, ItemData

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    thumbnail = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    grid = rng.normal(size=(50, 768)).astype(np.float16) if patches else None
    return [
        (
            AssetInfo(
                path=f"/photos/{i:07d}.jpg",
                kind="image",
                size=120_000,
                mtime_ns=i,
                content_hash=f"{i:064x}",
                width=640,
                height=480,
            ),  # fmt: skip
            [ItemData("image", None, None, None, vectors[i], thumbnail, patches=grid)],
        )
        for i in range(n)
    ]


def commit_seconds(rows: list[tuple], batch: int, home: Path) -> float:
    from mmsearch.store import Collection

    shutil.rmtree(home, ignore_errors=True)
    with Collection(home) as collection, collection.writer() as writer:
        writer.bind_encoder("bench", 512, "weights")
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            writer.write_many(rows[i : i + batch])
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 256])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--patches", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "commit_rate.json")
    args = ap.parse_args(argv)
    rows = pictures(args.n, args.patches)
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeat):  # alternating, so a drifting machine shows in both
            for batch in args.batches:
                seconds = commit_seconds(rows, batch, Path(scratch) / "home")
                rates.setdefault(str(batch), []).append(round(args.n / seconds, 1))
    row = stamp(
        {
            "pictures": args.n,
            "patches": args.patches,
            "pictures_per_s_by_batch": rates,
            "best_pictures_per_s": max(max(v) for v in rates.values()),
        }
    )
    print_and_append(row, args.out)
    return row


if __name__ == "__main__":
    main()

"""Index folders in a process of its own, for the crash and concurrency tests to kill or watch.

    python tests/index_script.py HOME ROOT... [--workers N] [--commit-every N] [--throttle S]

Prints the summary as one JSON line. Heavy imports stay inside main(): decode workers import
this file as their main module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class SlowProgress:
    """Sleeps a little per file committed, so a test can kill the run part-way through."""

    def __init__(self, throttle_s: float) -> None:
        self.throttle_s = throttle_s

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        import time

        time.sleep(self.throttle_s * n)

    def finish(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("roots", type=Path, nargs="+")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--commit-every", type=int, default=256)
    parser.add_argument("--save-every-s", type=float, default=30.0)
    parser.add_argument("--throttle", type=float, default=0.0)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import dataclasses
    import json
    import logging

    import torch

    from indexer.pipeline import IndexOptions, run_index
    from mmsearch.models import load_encoder
    from mmsearch.store import Collection

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.manual_seed(args.seed)  # same random weights in every process
    encoder = load_encoder("mmsearch-tiny/random")
    options = IndexOptions(
        workers=args.workers,
        batch_size=args.batch_size,
        commit_every=args.commit_every,
        save_every_s=args.save_every_s,
        in_process=args.in_process,
    )
    with Collection(args.home) as collection, collection.writer() as writer:
        summary = run_index(
            writer, lambda: encoder, args.roots, options, progress=SlowProgress(args.throttle)
        )
    print(json.dumps(dataclasses.asdict(summary)), flush=True)


if __name__ == "__main__":
    main()

"""What `index --ray local` costs over a plain `index` run on the same machine and files.

    python benchmarks/ray_overhead.py                                  # tiny, 600 rendered photos
    python benchmarks/ray_overhead.py --images /tmp/peers/images/seed1234 \\
        --model ViT-B-32@/tmp/peers/ckpt/open_clip_ViT-B-32_randinit_seed0.pt
    python benchmarks/ray_overhead.py --cluster running ...            # `ray start` once, --ray auto

Each run is a whole `mmsearch index` command from a cold shell into a fresh home (start-up, model
loads, tagging included), plain and with Ray, alternating, `--repeat` times each. With
`--cluster local` (the default) each Ray run is `--ray local`: it starts and stops its own Ray
instance, which the timing includes. With `--cluster running` a Ray head is started once on this
machine (`ray start --head`, untimed, as a user's cluster is already up) and each run is
`--ray auto`, which connects to it. Reports the median wall time of each and the overhead
(ray / plain - 1), and checks that both homes hold the same items. Appends to
benchmarks/results/ray_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, stamp  # noqa: E402


def _index(images: Path, home: Path, model: str, ray: str | None) -> tuple[float, dict]:
    shutil.rmtree(home, ignore_errors=True)
    command = [sys.executable, "-m", "mmsearch.cli", "index", str(images), "--home", str(home)]
    command += ["--model", model, "--json"] + (["--ray", ray] if ray else [])
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    return wall, summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="a folder of pictures (default: render --photos)")
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_overhead.json")
    ap.add_argument(
        "--cluster", choices=("local", "running"), default="local",
        help="local: each run starts its own Ray (--ray local); running: one `ray start --head` first (--ray auto)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    ray_flag = "local" if args.cluster == "local" else "auto"
    if args.cluster == "running":
        _ray_cli("start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false", "--disable-usage-stats")
    try:
        return _measure(args, ray_flag)
    finally:
        if args.cluster == "running":
            _ray_cli("stop", "--force")


def _ray_cli(*words: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), *words], check=True, capture_output=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def _measure(args: argparse.Namespace, ray_flag: str) -> dict:

    work = Path(tempfile.mkdtemp(prefix="mmsearch-ray-"))
    images = args.images
    if images is None:
        from mmsearch.synth.media import write_photo_folder

        images = write_photo_folder(work / "photos", args.photos, seed=31)
    walls: dict[str, list[float]] = {"plain": [], "ray": []}
    summaries: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name in ("plain", "ray"):
            wall, summary = _index(images, work / name, args.model, ray=ray_flag if name == "ray" else None)
            walls[name].append(wall)
            summaries[name] = summary
            print(f"{name:6} {wall:7.1f} s  {summary['new']} files, {summary['items_added']} items")
    plain, ray = statistics.median(walls["plain"]), statistics.median(walls["ray"])
    same = all(summaries["plain"][k] == summaries["ray"][k] for k in ("new", "items_added"))
    result = stamp(
        {
            "model": args.model,
            "cluster": args.cluster,
            "ray_flag": f"--ray {ray_flag}",
            "images": str(images),
            "files": summaries["plain"]["new"],
            "plain_wall_s": [round(w, 2) for w in walls["plain"]],
            "ray_wall_s": [round(w, 2) for w in walls["ray"]],
            "plain_median_s": round(plain, 2),
            "ray_median_s": round(ray, 2),
            "overhead": round(ray / plain - 1, 4),
            "same_items": same,
            "plain_stage_rates": summaries["plain"].get("stage_rates"),
        }
    )
    print(f"plain {plain:.1f} s, --ray {ray_flag} {ray:.1f} s: overhead {100 * (ray / plain - 1):+.1f}%")
    append_results(args.out, [result])
    print(f"appended to {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()

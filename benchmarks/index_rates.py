"""Indexing rate per kind (images, videos, recordings, notes) through the real `Engine.index`.

    python benchmarks/index_rates.py                 # defaults sized for a 2-core machine, ~2-3 minutes
    python benchmarks/index_rates.py --photos 1000 --model ViT-B-32/random

Each kind is rendered from the shapes world into its own folder and indexed into its own home, so
the rates don't mix. Prints a table and appends to benchmarks/results/index_rates.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, stamp  # noqa: E402


def make_media(
    root: Path, photos: int, videos: int, video_s: float, recordings: int, notes: int
) -> dict[str, tuple[Path, float]]:
    """Render each kind's folder; returns {kind: (folder, seconds of media or 0)}."""
    from mmsearch.synth import sample_scene, scene_captions
    from mmsearch.synth.media import speak, write_note, write_photo_folder, write_video

    rng = random.Random(0)
    out = {"image": (write_photo_folder(root / "image", photos, seed=11), 0.0)}
    (root / "video").mkdir()
    total = 0.0
    for v in range(videos):
        segments, t = [], 0.0
        while t < video_s:
            d = rng.uniform(3, 8)
            segments.append((sample_scene(rng), d))
            t += d
        spans = write_video(
            root / "video" / f"clip_{v}.mp4", segments, size=(640, 360), fps=25, seed=v
        )
        total += spans[-1][1]
    out["video"] = (root / "video", total)
    (root / "audio").mkdir()
    audio_s = 0.0
    import wave

    for a in range(recordings):
        text = ". ".join(rng.choice(scene_captions(sample_scene(rng))) for _ in range(4))
        path = speak(text, root / "audio" / f"memo_{a}.wav")
        with wave.open(str(path)) as w:
            audio_s += w.getnframes() / w.getframerate()
    out["audio"] = (root / "audio", audio_s)
    (root / "text").mkdir()
    for n in range(notes):
        write_note(
            root / "text" / f"note_{n}.txt",
            [sample_scene(rng) for _ in range(12)],
            seed=n,
            filler=4,
        )
    out["text"] = (root / "text", 0.0)
    return out


def main(argv: list[str] | None = None) -> dict:
    from mmsearch import Engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--video-seconds", type=float, default=60.0)
    ap.add_argument("--recordings", type=int, default=4)
    ap.add_argument("--notes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "index_rates.json")
    args = ap.parse_args(argv)

    from indexer.pipeline import IndexOptions

    root = Path(tempfile.mkdtemp(prefix="mmsearch-rates-"))
    media = make_media(
        root, args.photos, args.videos, args.video_seconds, args.recordings, args.notes
    )
    rows = {}
    for kind, (folder, media_s) in media.items():
        with Engine(home=root / f"home_{kind}", model=args.model) as engine:
            _ = engine.encoder  # load the model outside the timed part
            t0 = time.perf_counter()
            summary = engine.index([folder], options=IndexOptions(workers=args.workers))
            dt = time.perf_counter() - t0
            items = sum(engine.status().items_by_kind.values())
        files = summary.new
        rows[kind] = {
            "files": files,
            "items": items,
            "seconds": round(dt, 2),
            "files_per_s": round(files / dt, 2),
            "items_per_s": round(items / dt, 2),
            "skipped": len(summary.skipped),
            "skipped_reasons": [f"{Path(x.path).name}: {x.reason}" for x in summary.skipped],
        }
        if media_s:
            rows[kind]["media_seconds"] = round(media_s, 1)
            rows[kind]["media_seconds_per_wall_second"] = round(media_s / dt, 2)
            rows[kind]["wall_minutes_per_media_hour"] = round(60 * dt / media_s, 2)
    result = stamp({"model": args.model, "rates": rows})
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Indexing rates with {args.model} on {device_label(result['device'])}")
    for col in ("kind", "files", "items", "seconds", "files/s", "items/s", "media s per wall s"):
        t.add_column(col, justify="right")
    for kind, r in rows.items():
        t.add_row(
            kind,
            str(r["files"]),
            str(r["items"]),
            str(r["seconds"]),
            str(r["files_per_s"]),
            str(r["items_per_s"]),
            str(r.get("media_seconds_per_wall_second", "")),
        )
    Console().print(t)
    append_results(args.out, [result])
    print(f"appended to {args.out}")
    return result


if __name__ == "__main__":
    main()

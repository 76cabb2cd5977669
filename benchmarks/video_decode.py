"""How fast video keyframe extraction runs here: frames read per second of video, and video
seconds processed per wall second, extrapolated to an hour of footage.

    python benchmarks/video_decode.py                 # renders a 60 s 640x360 25 fps video
    python benchmarks/video_decode.py --seconds 120 --video /tmp/v.mp4   # renders once, then reuses

Rendering the synthetic video takes longer than indexing it, so `--video` keeps it for reruns.
The figures are appended to benchmarks/results/video_decode.json with the date and device.
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

from _common import RESULTS, append_results, stamp  # noqa: E402

from indexer.sources.video import (  # noqa: E402
    VideoOptions,
    _decord_samples,
    _pyav_samples,
    extract_keyframes,
    frame_size,
    probe_video,
    select_keyframes,
)
from mmsearch.synth import sample_scene  # noqa: E402
from mmsearch.synth.media import write_video  # noqa: E402


def render(path: Path, seconds: float, size: tuple[int, int], fps: int, seed: int) -> int:
    """A shapes-world video with a scene change every 3-8 s; returns the number of scenes."""
    rng = random.Random(seed)
    segments, total = [], 0.0
    while total < seconds:
        length = min(rng.uniform(3.0, 8.0), seconds - total)
        segments.append((sample_scene(rng), length))
        total += length
    write_video(path, segments, size=size, fps=fps, seed=seed)
    return len(segments)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def report(name: str, duration: float, wall: float, frames: int | None = None) -> dict:
    rate = duration / wall
    line = f"{name:<34} {wall:6.2f} s wall  {rate:7.1f} s of video per wall s  {3600 / rate / 60:6.1f} min per hour of video"
    if frames is not None:
        line += f"  ({frames / duration:.2f} frames read per s of video)"
    print(line)
    return {"wall_s": round(wall, 2), "video_s_per_wall_s": round(rate, 1)}


def full_decode(path: Path) -> int:
    """Every frame through the codec, nothing converted: the floor any sampler pays for H.264."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the rendered video")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--analysis-fps", type=float, default=2.0)
    parser.add_argument(
        "--video", type=Path, help="use this file, rendering it first if it is missing"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "video_decode.json")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    path = args.video or Path(tmp.name) / "bench.mp4"
    if not path.exists():
        scenes, wall = timed(
            lambda: render(path, args.seconds, (args.width, args.height), args.fps, 0)
        )
        print(
            f"rendered {args.seconds:.0f} s, {scenes} scenes, {args.width}x{args.height} @ {args.fps} fps in {wall:.1f} s"
        )
    opts = VideoOptions(analysis_fps=args.analysis_fps)
    info = probe_video(path)
    size = frame_size(info.width, info.height, opts.frame_short_side)
    print(
        f"video: {info.duration_s:.1f} s, {info.width}x{info.height}, {info.fps:.0f} fps; keyframes at {size[0]}x{size[1]}"
    )

    frames, wall = timed(lambda: full_decode(path))
    rows = {"codec_only_pyav": report("codec only, all frames (PyAV)", info.duration_s, wall)}
    print(f"{'':<34} {frames / wall:6.0f} frames decoded per wall s")
    samples, wall = timed(
        lambda: list(_decord_samples(path, opts.analysis_fps, size, opts.analysis_width))
    )
    rows["sampling_decord"] = report("sampling only (decord)", info.duration_s, wall, len(samples))
    keyframes, wall = timed(lambda: select_keyframes(iter(samples), info.duration_s, opts))
    print(
        f"{'shot detection on those samples':<34} {wall:6.2f} s wall  -> {len(keyframes)} keyframes"
    )
    keyframes, wall = timed(lambda: extract_keyframes(path, info, opts))
    rows["keyframes_decord"] = report(
        "keyframe extraction (decord)", info.duration_s, wall, len(samples)
    )
    pyav = VideoOptions(analysis_fps=args.analysis_fps)
    keyframes_av, wall = timed(
        lambda: select_keyframes(
            _pyav_samples(path, pyav.analysis_fps, size, pyav.analysis_width), info.duration_s, pyav
        )
    )
    rows["keyframes_pyav"] = report("keyframe extraction (PyAV fallback)", info.duration_s, wall)
    print(f"keyframes: {len(keyframes)} (decord), {len(keyframes_av)} (PyAV)")
    tmp.cleanup()
    result = stamp(
        {
            "video": f"{info.duration_s:.1f} s, {info.width}x{info.height}, {info.fps:.0f} fps",
            "analysis_fps": args.analysis_fps,
            "keyframes": {"decord": len(keyframes), "pyav": len(keyframes_av)},
            **rows,
        }
    )
    append_results(args.out, [result])
    return result


if __name__ == "__main__":
    main()

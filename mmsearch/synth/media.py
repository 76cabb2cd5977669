"""Turns shapes-world scenes into files: photo folders, videos, spoken captions and notes.

These are the fixtures of the demo, the tests and the benchmarks; every file is reproducible
from its seed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import MissingDependencyError, require
from mmsearch.synth.captions import random_caption, scene_captions
from mmsearch.synth.render import RenderStyle, random_style, render_scene
from mmsearch.synth.scene import Scene, sample_scene


def write_photo_folder(
    folder: str | Path,
    n: int,
    seed: int = 0,
    *,
    sizes: Sequence[tuple[int, int]] = ((320, 240), (240, 320), (400, 400), (480, 270)),
    varied_style: bool = True,
) -> Path:
    """Write n captioned photos (JPEG and PNG) and `captions.jsonl` (path, caption, all captions, labels).

    The captions file has the layout the recall benchmark reads (one JSON object per line with
    `path` relative to the folder and `caption`), the same layout users have for Flickr30k/COCO.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = random.Random(seed * 7_919 + i)
        scene = sample_scene(rng)
        style = random_style(rng) if varied_style else RenderStyle()
        image = render_scene(scene, rng.choice(list(sizes)), style, rng)
        name = f"shapes_{seed:03d}_{i:05d}." + ("jpg" if i % 3 else "png")
        if name.endswith(".jpg"):
            image.save(folder / name, quality=rng.randint(80, 95))
        else:
            image.save(folder / name)
        rows.append(
            {
                "path": name,
                "caption": random_caption(scene, rng),
                "captions": scene_captions(scene, partial=True),
                "labels": scene.labels(),
            }
        )
    with open(folder / "captions.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return folder


def write_video(
    path: str | Path,
    segments: Sequence[tuple[Scene, float]],
    *,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    noise: float = 2.0,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Write an MP4 showing each scene for its duration; returns each scene's (start, end) seconds.

    A little per-frame noise keeps frames from being byte-identical, like a real camera.
    """
    av = require("av", "Writing videos", "video")
    path = Path(path)
    rng = np.random.default_rng(seed)
    spans, t = [], 0.0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for scene, seconds in segments:
            base = np.asarray(render_scene(scene, size), dtype=np.float32)
            n_frames = round(seconds * fps)
            for _ in range(n_frames):
                frame = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            spans.append((t, t + n_frames / fps))
            t += n_frames / fps
        for packet in stream.encode():
            container.mux(packet)
    return spans


def speak(text: str, path: str | Path, voice: str = "slt") -> Path:
    """Speak text into a WAV file with flite, the TTS that pocketsphinx transcribes best."""
    flite = shutil.which("flite")
    if flite is None:
        raise MissingDependencyError(
            "Speaking captions needs the 'flite' program. Install it with: apt-get install flite"
        )
    path = Path(path)
    subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


def write_silence(path: str | Path, seconds: float, rate: int = 16_000) -> Path:
    """A silent mono WAV: a valid recording with nothing to transcribe."""
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return path


_NOTE_OPENERS = (
    "Notes from the studio.",
    "Field notes, day {n}.",
    "Sketchbook entry {n}.",
    "Inventory of the display board.",
)
_SENTENCES = (
    "On the board we pinned {thing}.",
    "Today I drew {thing}.",
    "The next card shows {thing}.",
    "Someone left {thing} on the table.",
)


def write_note(path: str | Path, scenes: Sequence[Scene], seed: int = 0, filler: int = 2) -> list[str]:
    """Write a plain-text note with one paragraph per scene; returns the paragraphs.

    Filler sentences between scenes make chunking and passage retrieval meaningful.
    """
    rng = random.Random(seed)
    paragraphs = [rng.choice(_NOTE_OPENERS).format(n=rng.randint(1, 30))]
    for scene in scenes:
        thing = rng.choice(scene_captions(scene)).removeprefix("a photo of ").removeprefix("a picture of ")
        sentence = rng.choice(_SENTENCES).format(thing=thing)
        padding = " ".join(
            rng.choice(["The light was soft.", "It was a quiet afternoon.", "Coffee went cold again.", "We tidied up afterwards."])
            for _ in range(filler)
        )
        paragraphs.append(f"{sentence} {padding}")
    Path(path).write_text("\n\n".join(paragraphs) + "\n")
    return paragraphs

"""Shared fixtures: the real `mmsearch serve` on a home, a small indexed library, the system browser.

Helpers that build files live in `fixtures_media.py`; what is here starts processes and keeps
them for the session, so several test modules can share one server and one browser.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pg_cluster import pg_cluster, pg_url  # noqa: F401  (a throwaway PostgreSQL: started when a test asks)

REPO = Path(__file__).resolve().parent.parent
GREY = (128, 128, 128)
SERVE_START_TIMEOUT_S = 120


# ---- the real server -----------------------------------------------------------------------------


@contextmanager
def serve_home(home: Path, *, ready: bool = True) -> Iterator[str]:
    """Run `mmsearch serve --home HOME --port 0` and yield its announced URL (ending in '/').

    With `ready`, wait until /api/status answers 200, i.e. the collection is loaded; a home
    without a collection never gets there, so pass `ready=False` for one.
    """
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "mmsearch.cli", "serve", "--home", str(home), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        url = _announced_url(lines, proc, deadline)
        if ready:
            _wait_until_ready(url, proc, deadline)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _announced_url(lines: queue.Queue[str], proc: subprocess.Popen, deadline: float) -> str:
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                pytest.fail(f"mmsearch serve exited {proc.returncode}: {''.join(seen)}")
            continue
        seen.append(line)
        found = re.search(r"https?://\S+/", line)
        if found:
            return found.group(0)
    pytest.fail(f"mmsearch serve printed no URL in {SERVE_START_TIMEOUT_S} s: {''.join(seen)}")


def _wait_until_ready(url: str, proc: subprocess.Popen, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mmsearch serve exited {proc.returncode}")
        try:
            r = httpx.get(url + "api/status", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.3)
    pytest.fail(f"mmsearch serve did not answer /api/status in time: {last}")


# ---- a small library, indexed with the bundled model ------------------------------------------


@dataclass(frozen=True)
class Library:
    """Rendered photos and one video, indexed with `tiny` into `home`."""

    root: Path
    home: Path
    photos: Path
    captions: dict[str, dict]  # photo file name -> its row in captions.jsonl (caption, labels)
    video: Path
    video_spans: dict[str, tuple[float, float]]  # "red circle" -> (start, end) seconds on screen
    days: dict[str, str] = field(default_factory=dict)  # file name -> the day it was modified

    def photo_names(self) -> list[str]:
        """The photos' file names, oldest first (one day apart)."""
        return sorted(self.captions, key=lambda name: self.days[name])

    def photos_with(self, colour: str, shape: str) -> set[str]:
        """Names of the photos that really show a `colour` `shape` (the oracle for a query)."""
        return {
            name
            for name, row in self.captions.items()
            if any(o["colour"] == colour and o["shape"] == shape for o in row["labels"]["objects"])
        }


@pytest.fixture(scope="session")
def indexed_library(tmp_path_factory) -> Library:
    """16 photos and a 10 s video (blue square, red circle, green star) a day apart, with `tiny`."""
    from indexer.pipeline import IndexOptions
    from mmsearch import Engine
    from mmsearch.synth import single_object_scene
    from mmsearch.synth.media import write_photo_folder, write_video

    root = tmp_path_factory.mktemp("library")
    photos = write_photo_folder(root / "library" / "photos", 16, seed=4)
    captions = {
        row["path"]: row
        for row in map(json.loads, (photos / "captions.jsonl").read_text().splitlines())
    }
    clips = root / "library" / "clips"
    clips.mkdir()
    video = clips / "board.mp4"
    shown = [("blue", "square", 4.0), ("red", "circle", 3.0), ("green", "star", 3.0)]
    spans = write_video(
        video,
        [(single_object_scene(c, s, "large", "center", GREY), secs) for c, s, secs in shown],
        size=(320, 240),
        fps=10,
    )
    days = _date_the_files([*(photos / name for name in captions), video], datetime(2021, 1, 1, 12))
    home = root / "home"
    with Engine(home=home, model="tiny", device="cpu") as engine:
        summary = engine.index([root / "library"], options=IndexOptions(in_process=True))
    assert not summary.skipped, summary.skipped
    return Library(
        root=root,
        home=home,
        photos=photos,
        captions=captions,
        video=video,
        video_spans={f"{c} {s}": span for (c, s, _), span in zip(shown, spans)},
        days=days,
    )


def _date_the_files(files: list[Path], first: datetime) -> dict[str, str]:
    """Give each file its own modification day, one day apart in order, so date filters and
    sorting have something to tell apart (the rendered files have no date taken)."""
    days = {}
    for i, path in enumerate(files):
        when = first + timedelta(days=i)
        os.utime(path, (when.timestamp(), when.timestamp()))
        days[path.name] = when.date().isoformat()
    return days


@pytest.fixture(scope="session")
def mmsearch_server():
    """`serve_home` itself: `with mmsearch_server(home) as url: ...` runs a server on any home."""
    return serve_home


@pytest.fixture(scope="session")
def library_url(indexed_library) -> Iterator[str]:
    """The URL of `mmsearch serve` on the indexed library, for the whole session."""
    with serve_home(indexed_library.home) as url:
        yield url


# ---- the system browser --------------------------------------------------------------------------


def system_chromium() -> str:
    """Debian's chromium (scripts/setup.sh installs it); MMSEARCH_CHROMIUM names another."""
    path = os.environ.get("MMSEARCH_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "The browser tests need Chromium: run `bash scripts/setup.sh` (apt-get install "
            "chromium) or set MMSEARCH_CHROMIUM to a Chromium binary."
        )
    return path


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium driven by Playwright; nothing is downloaded at run time."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=system_chromium())
        yield chromium
        chromium.close()

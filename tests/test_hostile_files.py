"""Hostile files, generated here, each indexed in a process of its own under an RSS and time cap.

Every file must be reported (indexed, truncated or skipped with a reason) by a run that completes
and stays under the caps: a 3 h silent FLAC, an MKV claiming 10^8 s, a 49 MB note, a 3,000-page
PDF, a link to /, zero-byte and cut-off files, names that are not UTF-8. The caps are the cost of
indexing one line of text plus a fixed headroom, so they follow the model's own footprint.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_index import REPO, count_assets, script_env, wait_for_assets
from hostile_media import huge_note, many_page_pdf, mkv_claiming, silent_flac, truncated_copy
from PIL import Image

RUNNER = Path(__file__).with_name("hostile_index.py")
RSS_HEADROOM_MB = 400  # over the baseline run; the unfixed FLAC took 3.3 GB, the note 2.1 GB

pytestmark = pytest.mark.slow


def index_once(home: Path, root: Path, timeout_s: float) -> tuple[dict, dict]:
    """(summary, {"maxrss_mb", "seconds"}) of one in-process index run, killed past timeout_s."""
    cmd = [sys.executable, str(RUNNER), str(home), str(root), "--in-process", "--workers", "1"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=timeout_s
    )
    assert proc.returncode == 0, f"index run failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-2]), json.loads(lines[-1])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    """What indexing one line of text costs: interpreter, torch and the encoders."""
    root = tmp_path_factory.mktemp("baseline")
    (root / "lib").mkdir()
    (root / "lib" / "one.txt").write_text("A red circle on the left.")
    _summary, cost = index_once(root / "home", root / "lib", timeout_s=300)
    return cost


def check_caps(cost: dict, baseline: dict, extra_s: float) -> None:
    cap_mb = baseline["maxrss_mb"] + RSS_HEADROOM_MB
    assert cost["maxrss_mb"] < cap_mb, f"peak RSS {cost['maxrss_mb']:.0f} MB > cap {cap_mb:.0f} MB"
    cap_s = baseline["seconds"] + extra_s
    assert cost["seconds"] < cap_s, f"took {cost['seconds']:.0f} s > cap {cap_s:.0f} s"


def skipped(summary: dict) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in summary["skipped"]}


def one_file_folder(tmp_path: Path, name: str) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    return lib / name


def test_three_hours_of_silent_flac(tmp_path, baseline):
    path = silent_flac(one_file_folder(tmp_path, "silence.flac"), 3 * 3600)
    assert path.stat().st_size < 4_000_000  # small on disk, 10,800 s of audio
    summary, cost = index_once(tmp_path / "home", path.parent, timeout_s=300)
    assert skipped(summary) == {str(path): "no speech found"}
    check_caps(cost, baseline, extra_s=60)


def test_mkv_claiming_a_hundred_million_seconds(tmp_path, baseline):
    path = mkv_claiming(one_file_folder(tmp_path, "liar.mkv"), 1e8)
    summary, cost = index_once(tmp_path / "home", path.parent, timeout_s=300)
    assert "false length" in skipped(summary)[str(path)]
    check_caps(cost, baseline, extra_s=30)


def test_a_49_mb_note_is_truncated_and_reported(tmp_path, baseline):
    path = huge_note(one_file_folder(tmp_path, "dump.txt"), 49)
    summary, cost = index_once(tmp_path / "home", path.parent, timeout_s=600)
    assert summary["new"] == 1 and summary["items_added"] == 5_000
    assert summary["truncated"] == [
        {"path": str(path), "note": "kept the first 5,000 passages (max_passages)"}
    ]
    check_caps(cost, baseline, extra_s=300)  # encoding 5,000 passages on two shared CPU cores


def test_a_3000_page_pdf_is_truncated_and_reported(tmp_path, baseline):
    path = many_page_pdf(one_file_folder(tmp_path, "tome.pdf"), 3_000)
    summary, cost = index_once(tmp_path / "home", path.parent, timeout_s=600)
    assert summary["new"] == 1 and summary["items_added"] == 1_000
    assert summary["truncated"] == [
        {"path": str(path), "note": "read the first 1,000 of 3,000 pages (max_pdf_pages)"}
    ]
    check_caps(cost, baseline, extra_s=120)


def test_a_link_to_the_filesystem_root(tmp_path, baseline):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "note.txt").write_text("A blue square at the top.")
    os.symlink("/", lib / "everything")
    summary, cost = index_once(tmp_path / "home", lib, timeout_s=120)
    assert summary["new"] == 1
    reasons = skipped(summary)
    assert list(reasons) == [str(lib.resolve() / "everything")]
    assert "outside the indexed folders" in reasons[str(lib.resolve() / "everything")]
    check_caps(cost, baseline, extra_s=20)


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def test_zero_byte_and_cut_off_files_are_each_reported(tmp_path, baseline):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("empty.jpg", "empty.mp4", "empty.flac", "empty.txt", "empty.pdf", "alone.srt"):
        (lib / name).write_bytes(b"")
    whole = tmp_path / "whole"
    whole.mkdir()
    (whole / "photo.jpg").write_bytes(jpeg_bytes())
    mkv_claiming(whole / "clip.mkv", 3.0)
    silent_flac(whole / "quiet.flac", 20)
    many_page_pdf(whole / "doc.pdf", 20)
    for src in whole.iterdir():
        truncated_copy(src, lib / f"cut_{src.name}", keep=0.4)
    files = sorted(str(p) for p in lib.iterdir())
    summary, cost = index_once(tmp_path / "home", lib, timeout_s=300)
    reasons = skipped(summary)
    assert all(reasons.values()), reasons  # every skip says why
    assert set(reasons) <= set(files) and len(reasons) + summary["new"] == len(files), (
        reasons,
        summary["new"],
    )
    for name in ("empty.jpg", "empty.mp4", "empty.flac", "empty.txt", "empty.pdf"):
        assert reasons[str(lib / name)] == "empty file"
    check_caps(cost, baseline, extra_s=60)


def test_names_that_are_not_utf8_are_indexed_and_kept(tmp_path, baseline):
    """b'caf\\xe9.jpg' is a valid Linux name; the catalog stores an escaped, lossless key."""
    from helpers_index import asset_table

    from mmsearch.paths import key_path

    lib = tmp_path / "lib"
    lib.mkdir()
    photo = os.path.join(os.fsencode(lib), b"caf\xe9.jpg")
    note = os.path.join(os.fsencode(lib), b"r\xe9sum\xe9.txt")
    with open(photo, "wb") as f:
        f.write(jpeg_bytes())
    with open(note, "wb") as f:
        f.write(b"A green star in the center.")
    summary, cost = index_once(tmp_path / "home", lib, timeout_s=300)
    assert summary["new"] == 2 and summary["skipped"] == []
    keys = sorted(asset_table(tmp_path / "home"))
    base = str(lib.resolve())
    assert keys == [f"{base}/caf\\xe9.jpg", f"{base}/r\\xe9sum\\xe9.txt"]
    assert sorted(os.fsencode(key_path(k)) for k in keys) == sorted([photo, note])
    again, _ = index_once(tmp_path / "home", lib, timeout_s=300)
    assert again["unchanged"] == 2 and again["new"] == 0
    os.remove(photo)
    gone, _ = index_once(tmp_path / "home", lib, timeout_s=300)
    assert gone["deleted"] == 1 and sorted(asset_table(tmp_path / "home")) == keys[1:]
    check_caps(cost, baseline, extra_s=30)


# ---- SIGTERM ---------------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Processes started under `pid` (decode workers, the forkserver), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_stops_an_index_run_cleanly(tmp_path):
    """Like Ctrl-C: committed work is kept, workers are stopped, and the exit code is 143."""
    from mmsearch.synth.media import write_photo_folder

    photos = write_photo_folder(tmp_path / "photos", 400, seed=3, sizes=((320, 240),))
    home = tmp_path / "home"
    args = [sys.executable, "-m", "mmsearch.cli", "index", str(photos), "--home", str(home),
            "--model", "mmsearch-tiny/random", "--workers", "2", "--batch-size", "4", "--json"]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_assets(home, 20, proc)
        helpers = descendants(proc.pid)
        assert helpers, "expected decode workers"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted; committed work is kept" in err
    kept = count_assets(home)
    assert 20 <= kept < 400
    deadline = time.monotonic() + 15
    while any(alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in helpers), "decode workers outlived the run"

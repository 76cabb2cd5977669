"""Scanning finds each file once, never hangs on link loops, and the diff keeps vectors it can keep."""

from __future__ import annotations

import hashlib
import os
from itertools import islice
from pathlib import Path

import pytest
from fixtures_media import run_unprivileged, unprivileged_tmp_dir

from indexer import scan as scan_mod
from indexer.hashing import content_hash
from indexer.scan import (
    ChangePlan,
    FileEntry,
    KnownAsset,
    ScanProblem,
    plan_changes,
    scan,
    walk,
)

EXTS = {".jpg", ".png"}


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(entries) -> list[str]:
    return sorted(e.path.name for e in entries)


# ---- hashing ---------------------------------------------------------------------------------


def test_content_hash_is_blake2b_of_the_bytes_whatever_the_chunking(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41
    path = touch(tmp_path / "a.bin", data)
    expected = hashlib.blake2b(data, digest_size=32).hexdigest()
    assert content_hash(path) == expected == content_hash(path, chunk_size=7)
    assert content_hash(touch(tmp_path / "b.bin", data + b"!")) != expected
    assert (
        content_hash(touch(tmp_path / "empty.bin", b""))
        == hashlib.blake2b(digest_size=32).hexdigest()
    )


# ---- walking ---------------------------------------------------------------------------------


def test_walk_finds_wanted_extensions_recursively_with_resolved_paths(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg", b"12345")
    touch(tmp_path / "sub" / "deeper" / "B.JPG")
    touch(tmp_path / "sub" / "c.png")
    touch(tmp_path / "sub" / "notes.txt")
    entries = list(walk([tmp_path / "sub" / ".."], ["JPG", "png"]))
    assert names(entries) == ["B.JPG", "a.jpg", "c.png"]
    first = next(e for e in entries if e.path.name == "a.jpg")
    assert first.path == (tmp_path / "a.jpg").resolve() and first.path.is_absolute()
    assert first.size == 5 and isinstance(first.mtime_ns, int)
    assert first.mtime_ns == os.stat(tmp_path / "a.jpg").st_mtime_ns


def test_hidden_files_and_folders_are_skipped_unless_asked(tmp_path: Path) -> None:
    touch(tmp_path / "seen.jpg")
    touch(tmp_path / ".secret.jpg")
    touch(tmp_path / ".thumbnails" / "t.jpg")
    assert names(walk([tmp_path], EXTS)) == ["seen.jpg"]
    assert names(walk([tmp_path], EXTS, include_hidden=True)) == [
        ".secret.jpg",
        "seen.jpg",
        "t.jpg",
    ]
    # A root the user names is walked even when its own name starts with a dot.
    assert names(walk([tmp_path / ".thumbnails"], EXTS)) == ["t.jpg"]


def test_symlink_loop_terminates_and_yields_each_file_once(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "one.jpg")
    touch(tmp_path / "a" / "b" / "two.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "back_to_a")
    os.symlink(tmp_path / "a" / "b", tmp_path / "a" / "again_b")
    os.symlink("self.jpg", tmp_path / "a" / "self.jpg")  # a link to itself
    problems: list[ScanProblem] = []
    found = list(islice(walk([tmp_path], EXTS, problems=problems), 100))
    assert names(found) == ["one.jpg", "two.jpg"]
    assert [p.reason for p in problems] == ["symbolic link loop"]


def test_links_out_of_the_roots_are_reported_not_followed_unless_asked(tmp_path: Path) -> None:
    outside = touch(tmp_path / "elsewhere" / "far.jpg").parent
    root = tmp_path / "library"
    touch(root / "own.jpg")
    os.symlink(outside, root / "linked")
    os.symlink(outside / "far.jpg", root / "alias.jpg")
    problems: list[ScanProblem] = []
    found = list(walk([root], EXTS, problems=problems))
    assert names(found) == ["own.jpg"]
    assert sorted(p.path.name for p in problems) == ["alias.jpg", "linked"]
    assert all("outside the indexed folders" in p.reason and not p.is_folder for p in problems)
    # "all": followed, and known by the path under the root they were reached through
    found = list(walk([root], EXTS, follow_symlinks="all"))
    assert [e.path for e in found] == [root.resolve() / "alias.jpg", root.resolve() / "own.jpg"]
    assert names(walk([root], EXTS, follow_symlinks="none")) == ["own.jpg"]


def test_links_inside_the_roots_are_followed_to_their_real_paths(tmp_path: Path) -> None:
    real = touch(tmp_path / "lib" / "2024" / "a.jpg").parent
    os.symlink(real, tmp_path / "lib" / "latest")
    os.symlink(real / "a.jpg", tmp_path / "lib" / "best.jpg")
    found = list(walk([tmp_path / "lib"], EXTS))
    assert [e.path for e in found] == [(real / "a.jpg").resolve()]  # one file, once


def test_a_link_to_the_filesystem_root_is_not_walked(tmp_path: Path) -> None:
    touch(tmp_path / "lib" / "a.jpg")
    os.symlink("/", tmp_path / "lib" / "everything")
    problems: list[ScanProblem] = []
    found = list(islice(walk([tmp_path / "lib"], EXTS, problems=problems), 1000))
    assert names(found) == ["a.jpg"]
    assert [(p.path.name, "outside" in p.reason) for p in problems] == [("everything", True)]


def test_system_folders_are_never_entered_even_when_links_are_followed(tmp_path: Path) -> None:
    os.symlink("/proc", tmp_path / "proc")
    os.symlink("/dev", tmp_path / "devices")
    problems: list[ScanProblem] = []
    found = list(islice(walk([tmp_path], EXTS, follow_symlinks="all", problems=problems), 10))
    assert found == []
    assert sorted(p.path.name for p in problems) == ["devices", "proc"]
    assert all("never indexed" in p.reason for p in problems)
    problems.clear()
    assert (
        list(walk(["/proc"], EXTS, problems=problems)) == []
        and "never indexed" in problems[0].reason
    )


def test_overlapping_roots_and_single_file_roots(tmp_path: Path) -> None:
    touch(tmp_path / "sub" / "x.jpg")
    touch(tmp_path / "y.png")
    found = list(walk([tmp_path / "sub", tmp_path, tmp_path / "y.png"], EXTS))
    assert names(found) == ["x.jpg", "y.png"]


def test_missing_root_broken_link_and_unsupported_file_are_problems(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    touch(tmp_path / "readme.txt")
    problems: list[ScanProblem] = []
    list(walk([tmp_path, tmp_path / "unplugged", tmp_path / "readme.txt"], EXTS, problems=problems))
    by_name = {p.path.name: p for p in problems}
    assert by_name["dangling.jpg"].reason == "broken symbolic link"
    assert by_name["unplugged"].reason == "folder not found" and by_name["unplugged"].is_folder
    assert by_name["readme.txt"].reason == "not a supported file type"


def test_unreadable_folder_is_a_problem_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path / "ok" / "a.jpg")
    locked = touch(tmp_path / "locked" / "b.jpg").parent
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked.resolve():
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan_mod.os, "scandir", scandir)
    problems: list[ScanProblem] = []
    assert names(walk([tmp_path], EXTS, problems=problems)) == ["a.jpg"]
    assert problems == [ScanProblem(locked.resolve(), "permission denied", is_folder=True)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to drop privileges")
def test_unreadable_folder_for_real() -> None:
    with unprivileged_tmp_dir() as root:
        touch(root / "ok" / "a.jpg")
        os.chmod(root / "ok", 0o755)
        os.chmod(root / "ok" / "a.jpg", 0o644)
        locked = touch(root / "locked" / "b.jpg").parent
        os.chmod(locked, 0)

        def attempt():
            problems: list[ScanProblem] = []
            return names(walk([root], EXTS, problems=problems)), problems

        found, problems = run_unprivileged(attempt)
    assert found == ["a.jpg"]
    assert [(p.path.name, p.reason, p.is_folder) for p in problems] == [
        ("locked", "permission denied", True)
    ]


# ---- the diff --------------------------------------------------------------------------------


def entry(name: str, size: int = 10, mtime_ns: int = 1_000) -> FileEntry:
    return FileEntry(Path("/lib") / name, size, mtime_ns)


def known(size: int = 10, mtime_ns: int = 1_000, digest: str | None = None) -> KnownAsset:
    return KnownAsset(size, mtime_ns, digest)


class CountingHash:
    """A fake hash from a table, recording which files it was asked about."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table, self.calls = table, []

    def __call__(self, path: Path) -> str:
        self.calls.append(path.name)
        if path.name not in self.table:
            raise FileNotFoundError(path)
        return self.table[path.name]


def test_unchanged_files_are_never_hashed() -> None:
    hash_fn = CountingHash({})
    plan = plan_changes(
        [entry("a.jpg"), entry("b.jpg", 20, 5)],
        {"/lib/a.jpg": known(digest="A"), "/lib/b.jpg": known(20, 5, "B")},
        hash_fn,
    )
    assert names(plan.unchanged) == ["a.jpg", "b.jpg"]
    assert hash_fn.calls == []
    assert plan.new == plan.changed == plan.moved == plan.deleted == plan.touched == []


def test_add_modify_move_delete_in_one_plan() -> None:
    hash_fn = CountingHash({"renamed.jpg": "M", "fresh.jpg": "F", "edited.jpg": "E2"})
    current = [
        entry("same.jpg"),
        entry("edited.jpg", 10, 2_000),  # same size, new mtime, new bytes
        entry("grown.jpg", 99, 2_000),  # new size: changed without hashing
        entry("renamed.jpg", 30),
        entry("fresh.jpg", 30),
    ]
    catalog = {
        "/lib/same.jpg": known(digest="S"),
        "/lib/edited.jpg": known(digest="E1"),
        "/lib/grown.jpg": known(digest="G"),
        "/lib/old_name.jpg": known(30, 7, "M"),
        "/lib/removed.jpg": known(digest="R"),
    }
    plan = plan_changes(current, catalog, hash_fn)
    assert names(plan.unchanged) == ["same.jpg"]
    assert names(plan.changed) == ["edited.jpg", "grown.jpg"]
    assert [(old, e.path.name) for old, e in plan.moved] == [("/lib/old_name.jpg", "renamed.jpg")]
    assert names(plan.new) == ["fresh.jpg"]
    assert plan.deleted == ["/lib/removed.jpg"]
    assert sorted(hash_fn.calls) == ["edited.jpg", "fresh.jpg", "renamed.jpg"]
    assert plan.hashes == {"/lib/edited.jpg": "E2", "/lib/fresh.jpg": "F", "/lib/renamed.jpg": "M"}


def test_new_mtime_with_the_same_bytes_is_touched_not_reencoded() -> None:
    plan = plan_changes(
        [entry("a.jpg", 10, 5_000)], {"/lib/a.jpg": known(digest="A")}, CountingHash({"a.jpg": "A"})
    )
    assert names(plan.touched) == ["a.jpg"] and plan.changed == []


def test_new_files_are_not_hashed_when_no_vanished_file_has_their_size() -> None:
    hash_fn = CountingHash({})
    plan = plan_changes(
        [entry("n1.jpg", 11), entry("n2.jpg", 12)],
        {"/lib/gone.jpg": known(99, digest="G")},
        hash_fn,
    )
    assert names(plan.new) == ["n1.jpg", "n2.jpg"] and plan.deleted == ["/lib/gone.jpg"]
    assert hash_fn.calls == []


def test_two_copies_of_one_moved_file_give_one_move_and_one_new() -> None:
    hash_fn = CountingHash({"copy1.jpg": "H", "copy2.jpg": "H"})
    plan = plan_changes(
        [entry("copy1.jpg"), entry("copy2.jpg")], {"/lib/original.jpg": known(digest="H")}, hash_fn
    )
    assert [(o, e.path.name) for o, e in plan.moved] == [("/lib/original.jpg", "copy1.jpg")]
    assert names(plan.new) == ["copy2.jpg"]
    assert plan.deleted == []


def test_two_identical_files_moved_together_both_keep_their_vectors() -> None:
    hash_fn = CountingHash({"x.jpg": "H", "y.jpg": "H"})
    plan = plan_changes(
        [entry("x.jpg"), entry("y.jpg")],
        {"/lib/a.jpg": known(digest="H"), "/lib/b.jpg": known(digest="H")},
        hash_fn,
    )
    assert sorted(old for old, _ in plan.moved) == ["/lib/a.jpg", "/lib/b.jpg"]
    assert plan.new == plan.deleted == []


def test_unhashable_new_file_is_new_and_rows_without_hash_cannot_be_move_sources() -> None:
    plan = plan_changes(
        [entry("unreadable.jpg"), entry("b.jpg")],
        {"/lib/gone.jpg": known(digest="H"), "/lib/old.jpg": known(digest=None)},
        CountingHash({"b.jpg": "Z"}),
    )
    assert names(plan.new) == ["b.jpg", "unreadable.jpg"]
    assert plan.deleted == ["/lib/gone.jpg", "/lib/old.jpg"]


def test_scope_keeps_other_folders_and_other_kinds() -> None:
    catalog = {
        "/lib/a.jpg": known(),
        "/lib/gone.jpg": known(),
        "/lib/clip.mp4": known(),  # not an extension this scan looks at
        "/other/b.jpg": known(),  # another indexed folder
        "/library2/c.jpg": known(),  # shares a prefix, not a parent
        "/elsewhere/linked.jpg": known(),  # reached through a symlinked folder
    }
    current = [entry("a.jpg"), FileEntry(Path("/elsewhere/linked.jpg"), 10, 1_000)]
    plan = plan_changes(
        current, catalog, CountingHash({}), roots=[Path("/lib")], extensions=[".jpg"]
    )
    assert plan.deleted == ["/lib/gone.jpg"]
    assert names(plan.unchanged) == ["a.jpg", "linked.jpg"]


def test_known_files_under_unreadable_folders_are_kept() -> None:
    plan = plan_changes(
        [],
        {"/lib/locked/a.jpg": known(), "/lib/gone.jpg": known()},
        CountingHash({}),
        unreadable=[Path("/lib/locked")],
    )
    assert plan.kept == ["/lib/locked/a.jpg"] and plan.deleted == ["/lib/gone.jpg"]


# ---- scan(): walk + diff on real files ---------------------------------------------------------


def as_catalog(plan: ChangePlan, previous: dict[str, KnownAsset]) -> dict[str, KnownAsset]:
    """What a pipeline would store after applying `plan` (hashing the files it encoded)."""
    catalog = {k: v for k, v in previous.items() if k not in plan.deleted}
    for old, _ in plan.moved:
        catalog.pop(old)
    for e in [*plan.new, *plan.changed, *plan.touched, *(e for _, e in plan.moved)]:
        catalog[str(e.path)] = KnownAsset(e.size, e.mtime_ns, content_hash(e.real))
    return catalog


def test_rescan_after_rename_edit_delete_and_add(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    touch(lib / "keep.jpg", b"keep")
    touch(lib / "rename_me.jpg", b"moving bytes")
    touch(lib / "edit_me.png", b"v1")
    touch(lib / "delete_me.jpg", b"bye")
    first = scan([lib], {}, EXTS)
    assert len(first.plan.new) == 4 and first.problems == []
    catalog = as_catalog(first.plan, {})

    (lib / "sub").mkdir()
    (lib / "rename_me.jpg").rename(lib / "sub" / "renamed.jpg")
    touch(lib / "edit_me.png", b"v2 longer")
    (lib / "delete_me.jpg").unlink()
    touch(lib / "added.jpg", b"brand new")
    second = scan([lib], catalog, EXTS).plan
    assert names(second.unchanged) == ["keep.jpg"]
    assert [(Path(o).name, e.path.name) for o, e in second.moved] == [
        ("rename_me.jpg", "renamed.jpg")
    ]
    assert names(second.changed) == ["edit_me.png"]
    assert names(second.new) == ["added.jpg"]
    assert [Path(k).name for k in second.deleted] == ["delete_me.jpg"]

    other = touch(tmp_path / "other" / "z.jpg", b"z").parent
    third = scan([other], as_catalog(second, catalog), EXTS).plan
    assert names(third.new) == ["z.jpg"] and third.deleted == []


def test_scan_of_an_unplugged_folder_deletes_nothing(tmp_path: Path) -> None:
    lib = tmp_path / "usb"
    touch(lib / "a.jpg")
    catalog = as_catalog(scan([lib], {}, EXTS).plan, {})
    lib.rename(tmp_path / "usb_unplugged")
    report = scan([lib], catalog, EXTS)
    assert report.plan.deleted == [] and [Path(k).name for k in report.plan.kept] == ["a.jpg"]
    assert [p.reason for p in report.problems] == ["folder not found"]


def test_scan_defaults_to_registered_extensions(tmp_path: Path) -> None:
    touch(tmp_path / "photo.HEIC")
    touch(tmp_path / "photo.webp")
    touch(tmp_path / "random.xyz")
    assert names(scan([tmp_path], {}).plan.new) == ["photo.HEIC", "photo.webp"]


def test_files_reached_through_a_removed_link_are_deleted_on_the_next_scan(tmp_path: Path) -> None:
    """Known by the path under the root they came through, so the root's scan can judge them."""
    far = touch(tmp_path / "far" / "x.jpg", b"far away").parent
    lib = tmp_path / "lib"
    touch(lib / "own.jpg")
    os.symlink(far, lib / "link")
    first = scan([lib], {}, EXTS, follow_symlinks="all").plan
    assert sorted(str(e.path) for e in first.new) == [
        str(lib.resolve() / "link" / "x.jpg"),
        str(lib.resolve() / "own.jpg"),
    ]
    catalog = as_catalog(first, {})
    (lib / "link").unlink()
    assert scan([lib], catalog, EXTS, follow_symlinks="all").plan.deleted == [
        str(lib.resolve() / "link" / "x.jpg")
    ]
    # and a default scan, which no longer follows the link, drops them too
    os.symlink(far, lib / "link")
    report = scan([lib], catalog, EXTS)
    assert report.plan.deleted == [str(lib.resolve() / "link" / "x.jpg")]
    assert [p.path.name for p in report.problems] == ["link"]


def test_names_that_are_not_utf8_get_a_lossless_printable_key(tmp_path: Path) -> None:
    """b'caf\\xe9.jpg' (Latin-1) is a valid Linux name; SQLite cannot store its surrogate str."""
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as f:
        f.write(b"bytes")
    touch(tmp_path / "back\\slash.jpg", b"bs")
    report = scan([tmp_path], {}, EXTS)
    keys = sorted(str(e.path) for e in report.plan.new)
    base = str(tmp_path.resolve())
    assert keys == [f"{base}/back\\\\slash.jpg", f"{base}/caf\\xe9.jpg"]
    for e in report.plan.new:
        str(e.path).encode("utf-8")  # storable
        assert e.real.read_bytes() in (b"bytes", b"bs")  # and the real file opens
    assert os.fsencode(next(e for e in report.plan.new if "caf" in str(e.path)).real) == raw
    catalog = as_catalog(report.plan, {})
    again = scan([tmp_path], catalog, EXTS).plan
    assert len(again.unchanged) == 2 and again.new == [] and again.deleted == []

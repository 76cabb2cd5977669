"""Scan: walk folders and diff what is there against what the catalog knows (rclip's mark/sweep).

`walk` lists files; `plan_changes` is a pure diff that decides what must be encoded, what keeps
its vectors (unchanged, touched, moved) and what is gone. Only files that might have changed are
hashed, so a rescan of an untouched library costs one `stat` per file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from indexer.hashing import content_hash

log = logging.getLogger(__name__)

HashFn = Callable[[Path], str]


@dataclass(frozen=True)
class FileEntry:
    """A file found on disk, as the catalog compares it."""

    path: Path  # absolute, symbolic links resolved; str(path) is the catalog key
    size: int  # bytes
    mtime_ns: int  # modification time, integer nanoseconds (floats lose precision)


@dataclass(frozen=True)
class ScanProblem:
    """Something the walk could not read; reported to the user, never fatal."""

    path: Path
    reason: str  # short and human: "permission denied", "folder not found", ...
    is_folder: bool = False  # a folder that could not be listed: known files under it are kept


@dataclass(frozen=True)
class KnownAsset:
    """What the catalog remembers about a file, enough to tell whether it changed."""

    size: int
    mtime_ns: int
    content_hash: str | None = None  # None for rows written before hashing was known


@dataclass
class ChangePlan:
    """The work a scan found; every current file is in exactly one of the entry lists."""

    new: list[FileEntry] = field(default_factory=list)  # encode and add
    changed: list[FileEntry] = field(default_factory=list)  # same path, new content: re-encode
    moved: list[tuple[str, FileEntry]] = field(default_factory=list)  # (old key, entry): repoint
    deleted: list[str] = field(default_factory=list)  # known keys gone from disk: remove
    unchanged: list[FileEntry] = field(default_factory=list)  # same size and mtime: nothing to do
    touched: list[FileEntry] = field(default_factory=list)  # new mtime, same bytes: update row only
    kept: list[str] = field(default_factory=list)  # known keys under unreadable folders: left alone
    # key -> content hash of every file hashed while planning (the rest are hashed by workers)
    hashes: dict[str, str] = field(default_factory=dict)


# ---- walking ---------------------------------------------------------------------------------


def walk(
    roots: Iterable[Path | str],
    extensions: Iterable[str],
    *,
    include_hidden: bool = False,
    follow_symlinks: bool = True,
    problems: list[ScanProblem] | None = None,
) -> Iterator[FileEntry]:
    """Yield every file under `roots` whose (resolved) extension is wanted, each once.

    Symlinked folders are followed, but a folder already visited (same device and inode) is not
    entered again, so link loops and overlapping roots terminate. Names starting with '.' are
    skipped unless `include_hidden`. Unreadable folders and files are appended to `problems`.
    """
    exts = normalise_extensions(extensions)
    sink: list[ScanProblem] = problems if problems is not None else []
    state = _WalkState(exts, include_hidden, follow_symlinks, sink)
    for root in roots:
        yield from state.walk_root(Path(root))


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """Lower case with a leading dot, so "JPG", "jpg" and ".jpg" all mean the same."""
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def resolve_root(root: Path | str) -> Path:
    """The absolute, link-resolved form of a root, also for roots that do not exist (unmounted)."""
    return Path(os.path.realpath(os.path.expanduser(root)))


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "vanished during the scan"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or str(exc)


class _WalkState:
    """Visited folders and files shared across all roots of one walk."""

    def __init__(
        self, exts: frozenset[str], hidden: bool, follow: bool, problems: list[ScanProblem]
    ) -> None:
        self.exts, self.hidden, self.follow, self.problems = exts, hidden, follow, problems
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[Path] = set()

    def walk_root(self, root: Path) -> Iterator[FileEntry]:
        real = resolve_root(root)
        try:
            st = real.stat()
        except OSError as exc:
            reason = "folder not found" if isinstance(exc, FileNotFoundError) else _reason(exc)
            self.problems.append(ScanProblem(real, reason, is_folder=True))
            return
        if stat.S_ISREG(st.st_mode):  # a single file named on the command line
            if real.suffix.lower() in self.exts:
                yield from self._emit(real, st)
            else:
                self.problems.append(ScanProblem(real, "not a supported file type"))
            return
        if not stat.S_ISDIR(st.st_mode):
            self.problems.append(ScanProblem(real, "not a folder or a regular file"))
            return
        if self._first_visit(st):
            yield from self._walk_tree(real)

    def _first_visit(self, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def _walk_tree(self, top: Path) -> Iterator[FileEntry]:
        """Depth-first in name order with an explicit stack, so deep trees cannot overflow."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.problems.append(ScanProblem(folder, _reason(exc), is_folder=True))
                continue
            subfolders: list[Path] = []
            for entry in entries:
                if not self.hidden and entry.name.startswith("."):
                    continue
                try:
                    yield from self._visit(folder, entry, subfolders)
                except OSError as exc:
                    self.problems.append(ScanProblem(Path(entry.path), _reason(exc)))
            stack.extend(reversed(subfolders))

    def _visit(
        self, folder: Path, entry: os.DirEntry, subfolders: list[Path]
    ) -> Iterator[FileEntry]:
        is_link = entry.is_symlink()
        if is_link and not self.follow:
            return
        if entry.is_dir():  # follows links; raises OSError (ELOOP) for a link pointing at itself
            if self._first_visit(entry.stat()):
                subfolders.append(self._real(folder, entry, is_link))
            else:
                log.debug("skipping %s: folder already visited (link loop or overlap)", entry.path)
        elif entry.is_file():
            path = self._real(folder, entry, is_link)
            if path.suffix.lower() in self.exts:
                yield from self._emit(path, entry.stat())
        elif is_link and Path(entry.name).suffix.lower() in self.exts:
            self.problems.append(ScanProblem(Path(entry.path), "broken symbolic link"))

    @staticmethod
    def _real(folder: Path, entry: os.DirEntry, is_link: bool) -> Path:
        # `folder` is already resolved, so only links need resolving (one readlink chain each).
        return Path(os.path.realpath(entry.path)) if is_link else folder / entry.name

    def _emit(self, path: Path, st: os.stat_result) -> Iterator[FileEntry]:
        if path not in self.seen_files:
            self.seen_files.add(path)
            yield FileEntry(path, st.st_size, st.st_mtime_ns)


# ---- diffing ---------------------------------------------------------------------------------


def is_under(key: str, folders: Iterable[Path | str]) -> bool:
    """Whether a catalog key lies inside one of `folders` (lexically; both already resolved)."""
    for folder in folders:
        f = str(folder)
        if key == f or key.startswith(f if f.endswith(os.sep) else f + os.sep):
            return True
    return False


def plan_changes(
    current: Sequence[FileEntry],
    known: Mapping[str, KnownAsset],
    hash_fn: HashFn = content_hash,
    *,
    roots: Sequence[Path] | None = None,
    extensions: Iterable[str] | None = None,
    unreadable: Sequence[Path] = (),
) -> ChangePlan:
    """Diff a walk against the catalog without touching the disk except through `hash_fn`.

    - same path, same (size, mtime_ns): unchanged, never hashed;
    - same path, other size: changed; same size, other mtime: hashed, touched if the bytes match;
    - unknown path whose hash equals a vanished known file's: moved (each old path used once);
    - any other unknown path: new; vanished known paths that were not moved: deleted.

    `roots`/`extensions` limit which known assets are in scope (indexing a second folder, or
    only images, must not delete the rest); known assets under `unreadable` folders are kept.
    """
    by_key = {str(e.path): e for e in current}
    scoped = _scope(known, by_key, roots, extensions)
    plan = ChangePlan()
    vanished: dict[str, KnownAsset] = {}
    for key, asset in scoped.items():
        if key in by_key:
            continue
        if is_under(key, unreadable):
            plan.kept.append(key)
        else:
            vanished[key] = asset
    movable = _index_by_hash(vanished)
    movable_sizes = {vanished[k].size for keys in movable.values() for k in keys}

    def hash_of(entry: FileEntry) -> str | None:
        try:
            digest = hash_fn(entry.path)
        except OSError as exc:  # unreadable now; the source will report it when decoding
            log.debug("cannot hash %s: %s", entry.path, exc)
            return None
        plan.hashes[str(entry.path)] = digest
        return digest

    for key in sorted(by_key):
        entry, asset = by_key[key], scoped.get(key)
        if asset is not None:
            _classify_known(entry, asset, hash_of, plan)
        elif entry.size in movable_sizes and (old := _claim(movable, hash_of(entry))):
            plan.moved.append((old, entry))
        else:
            plan.new.append(entry)
    moved_from = {old for old, _ in plan.moved}
    plan.deleted = sorted(k for k in vanished if k not in moved_from)
    plan.kept.sort()
    return plan


def _scope(
    known: Mapping[str, KnownAsset],
    present: Mapping[str, FileEntry],
    roots: Sequence[Path] | None,
    extensions: Iterable[str] | None,
) -> Mapping[str, KnownAsset]:
    """Known assets this scan may judge: present now, or under a root with a scanned extension.

    Present files count even outside the roots: a symlinked folder resolves elsewhere.
    """
    if roots is None and extensions is None:
        return known
    exts = normalise_extensions(extensions) if extensions is not None else None
    return {
        k: v
        for k, v in known.items()
        if k in present
        or (
            (roots is None or is_under(k, roots))
            and (exts is None or os.path.splitext(k)[1].lower() in exts)
        )
    }


def _index_by_hash(vanished: Mapping[str, KnownAsset]) -> dict[str, list[str]]:
    by_hash: dict[str, list[str]] = {}
    for key in sorted(vanished):
        digest = vanished[key].content_hash
        if digest:
            by_hash.setdefault(digest, []).append(key)
    return by_hash


def _claim(movable: dict[str, list[str]], digest: str | None) -> str | None:
    """Take one vanished path with this hash; a second copy of the same bytes is then new."""
    olds = movable.get(digest) if digest else None
    return olds.pop(0) if olds else None


def _classify_known(
    entry: FileEntry,
    asset: KnownAsset,
    hash_of: Callable[[FileEntry], str | None],
    plan: ChangePlan,
) -> None:
    if entry.size == asset.size and entry.mtime_ns == asset.mtime_ns:
        plan.unchanged.append(entry)
    elif entry.size == asset.size and asset.content_hash and hash_of(entry) == asset.content_hash:
        plan.touched.append(entry)
    else:
        plan.changed.append(entry)


# ---- one call for the pipeline ---------------------------------------------------------------


@dataclass
class ScanReport:
    """A plan plus what could not be read; `problems` are shown to the user and counted."""

    plan: ChangePlan
    problems: list[ScanProblem]


def scan(
    roots: Sequence[Path | str],
    known: Mapping[str, KnownAsset],
    extensions: Iterable[str] | None = None,
    *,
    hash_fn: HashFn = content_hash,
    include_hidden: bool = False,
    follow_symlinks: bool = True,
) -> ScanReport:
    """Walk `roots` and diff against `known`, scoped to those roots and extensions.

    `extensions` defaults to every extension a source is registered for.
    """
    if extensions is None:
        from indexer.sources import extensions as registered

        extensions = registered()
    exts = normalise_extensions(extensions)
    problems: list[ScanProblem] = []
    current = list(
        walk(
            roots,
            exts,
            include_hidden=include_hidden,
            follow_symlinks=follow_symlinks,
            problems=problems,
        )
    )
    resolved = [resolve_root(r) for r in roots]
    unreadable = [p.path for p in problems if p.is_folder]
    plan = plan_changes(
        current, known, hash_fn, roots=resolved, extensions=exts, unreadable=unreadable
    )
    for p in problems:
        log.warning("skipped %s: %s", p.path, p.reason)
    return ScanReport(plan, problems)

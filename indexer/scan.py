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
from mmsearch.errors import ConfigError
from mmsearch.paths import key_path, path_key

log = logging.getLogger(__name__)

HashFn = Callable[[Path], str]


@dataclass(frozen=True)
class FileEntry:
    """A file found on disk, as the catalog compares it."""

    # str(path) is the catalog key: absolute, links inside the roots resolved, a link followed
    # out of the roots kept as the path under its root, and undecodable bytes escaped
    # (`mmsearch.paths.path_key`); `real` is what to open.
    path: Path
    size: int  # bytes
    mtime_ns: int  # modification time, integer nanoseconds (floats lose precision)

    @property
    def real(self) -> Path:
        """The path to open (the key with escaped bytes turned back into the file's own)."""
        return key_path(str(self.path))


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


LINKS_INSIDE, LINKS_ALL, LINKS_NONE = "inside", "all", "none"
LINK_POLICIES = (LINKS_INSIDE, LINKS_ALL, LINKS_NONE)
# Kernel filesystems, never walked (a link to / must not read /proc/kcore or every device).
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def walk(
    roots: Iterable[Path | str],
    extensions: Iterable[str],
    *,
    include_hidden: bool = False,
    follow_symlinks: bool | str = LINKS_INSIDE,
    problems: list[ScanProblem] | None = None,
) -> Iterator[FileEntry]:
    """Yield every file under `roots` whose (resolved) extension is wanted, each once.

    `follow_symlinks` decides which symbolic links are followed: "inside" (the default) those
    whose target lies inside one of the roots, "all" (or True) any, "none" (or False) none.
    A link not followed is reported with the reason, so a link to `/` cannot walk the whole
    filesystem. /proc, /sys and /dev are never entered. A folder already visited (same device
    and inode) is not entered again, so link loops and overlapping roots terminate. Names
    starting with '.' are skipped unless `include_hidden`. Unreadable folders and files are
    appended to `problems`.
    """
    exts = normalise_extensions(extensions)
    sink: list[ScanProblem] = problems if problems is not None else []
    roots = [Path(r) for r in roots]
    state = _WalkState(exts, include_hidden, _link_policy(follow_symlinks), sink, roots)
    for root in roots:
        yield from state.walk_root(root)


def _link_policy(value: bool | str) -> str:
    if value is True:
        return LINKS_ALL
    if value is False:
        return LINKS_NONE
    if value not in LINK_POLICIES:
        raise ConfigError(
            f"follow_symlinks must be one of {', '.join(LINK_POLICIES)}, not {value!r}"
        )
    return value


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
        self,
        exts: frozenset[str],
        hidden: bool,
        links: str,
        problems: list[ScanProblem],
        roots: Sequence[Path],
    ) -> None:
        self.exts, self.hidden, self.links, self.problems = exts, hidden, links, problems
        self.roots = [resolve_root(r) for r in roots]  # what "inside" means for links
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()  # (device, inode) of files emitted
        self.system_devices = _system_devices()

    def walk_root(self, root: Path) -> Iterator[FileEntry]:
        real = resolve_root(root)
        try:
            st = real.stat()
        except OSError as exc:
            reason = "folder not found" if isinstance(exc, FileNotFoundError) else _reason(exc)
            self.problems.append(ScanProblem(_key(real), reason, is_folder=True))
            return
        if stat.S_ISREG(st.st_mode):  # a single file named on the command line
            if real.suffix.lower() in self.exts:
                yield from self._emit(real, st)
            else:
                self.problems.append(ScanProblem(_key(real), "not a supported file type"))
            return
        if not stat.S_ISDIR(st.st_mode):
            self.problems.append(ScanProblem(_key(real), "not a folder or a regular file"))
            return
        if self._is_system(real, st):
            self.problems.append(ScanProblem(_key(real), SYSTEM_REASON))
            return
        if self._first_visit(st):
            yield from self._walk_tree(real)

    def _first_visit(self, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def _is_system(self, real: Path, st: os.stat_result) -> bool:
        return st.st_dev in self.system_devices or is_under(str(real), SYSTEM_FOLDERS)

    def _walk_tree(self, top: Path) -> Iterator[FileEntry]:
        """Depth-first in name order with an explicit stack, so deep trees cannot overflow."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.problems.append(ScanProblem(_key(folder), _reason(exc), is_folder=True))
                continue
            subfolders: list[Path] = []
            for entry in entries:
                if not self.hidden and entry.name.startswith("."):
                    continue
                try:
                    yield from self._visit(folder, entry, subfolders)
                except OSError as exc:
                    self.problems.append(ScanProblem(_key(Path(entry.path)), _reason(exc)))
            stack.extend(reversed(subfolders))

    def _visit(
        self, folder: Path, entry: os.DirEntry, subfolders: list[Path]
    ) -> Iterator[FileEntry]:
        path = folder / entry.name  # `folder` is resolved, or the path under a root of a link
        if entry.is_symlink():
            if not os.path.exists(entry.path):  # broken, or a loop
                path = folder / entry.name
            elif (followed := self._through_link(path, entry)) is None:
                return
            else:
                path = followed
        if entry.is_dir():  # follows links; raises OSError (ELOOP) for a link pointing at itself
            st = entry.stat()
            if self._is_system(path, st):
                self.problems.append(ScanProblem(_key(path), SYSTEM_REASON))
            elif self._first_visit(st):
                subfolders.append(path)
            else:
                log.debug("skipping %s: folder already visited (link loop or overlap)", entry.path)
        elif entry.is_file():
            if path.suffix.lower() in self.exts:
                yield from self._emit(path, entry.stat())
        elif Path(entry.name).suffix.lower() in self.exts:
            self.problems.append(ScanProblem(_key(folder / entry.name), "broken symbolic link"))

    def _through_link(self, path: Path, entry: os.DirEntry) -> Path | None:
        """The path a link's files are known by, or None when the link is not followed.

        A target inside the roots is known by its real path (so a file reached twice is one
        asset); a target outside them, followed only with "all", keeps the path under the root,
        so the catalog remembers which root it came through and drops it when the link goes.
        """
        if self.links == LINKS_NONE:
            return None
        target = Path(os.path.realpath(entry.path))
        if is_under(str(target), self.roots):
            return target
        wanted = entry.is_dir() or target.suffix.lower() in self.exts
        if self.links == LINKS_ALL and not is_under(str(target), SYSTEM_FOLDERS):
            return path
        if wanted:
            reason = (
                SYSTEM_REASON
                if is_under(str(target), SYSTEM_FOLDERS)
                else f"symbolic link to {_key(target)}, outside the indexed folders (not followed)"
            )
            self.problems.append(ScanProblem(_key(path), reason))
            log.info("not following %s -> %s", entry.path, target)
        return None

    def _emit(self, path: Path, st: os.stat_result) -> Iterator[FileEntry]:
        # The same file reached twice (through a link, or a hard link) is one file. Its identity
        # is (device, inode) from the stat already taken: a realpath per file cost a third of a
        # 100,000-file re-scan.
        identity = (st.st_dev, st.st_ino)
        if identity not in self.seen_files:
            self.seen_files.add(identity)
            yield FileEntry(_key(path), st.st_size, st.st_mtime_ns)


SYSTEM_REASON = "system folder (/proc, /sys and /dev are never indexed)"


def _key(path: Path) -> Path:
    """A path in its catalog form (`mmsearch.paths.path_key`), still as a Path."""
    return Path(path_key(path))


def _system_devices() -> frozenset[int]:
    """Devices of the kernel filesystems, to spot them mounted anywhere (a chroot's /proc)."""
    devices = set()
    for folder in SYSTEM_FOLDERS:
        try:
            devices.add(os.stat(folder).st_dev)
        except OSError:
            continue
    return frozenset(devices)


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
            digest = hash_fn(entry.real)
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
    follow_symlinks: bool | str = LINKS_INSIDE,
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
    resolved = [_key(resolve_root(r)) for r in roots]
    unreadable = [p.path for p in problems if p.is_folder]
    plan = plan_changes(
        current, known, hash_fn, roots=resolved, extensions=exts, unreadable=unreadable
    )
    for p in problems:
        log.warning("skipped %s: %s", p.path, p.reason)
    return ScanReport(plan, problems)

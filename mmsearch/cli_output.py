"""Rich rendering for the CLI: the progress reporter, result tables and summaries."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from indexer.pipeline import IndexSummary
    from mmsearch.results import CollectionStatus, SearchResult


class RichProgress:
    """The pipeline's ProgressReporter drawn as a rich bar with the file rate."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = None

    def start(self, total: int, description: str) -> None:
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, n)
        task = self._progress.tasks[0]
        if task.speed:
            self._progress.update(self._task, rate=f"{task.speed:.1f} files/s")

    def finish(self) -> None:
        self._progress.stop()


def timestamp(seconds: float) -> str:
    """Seconds as HH:MM:SS, the form a person types into a player's seek box."""
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def span(hit: SearchResult) -> str:
    if hit.start is None:
        return ""
    end = hit.end if hit.end is not None else hit.start
    return f"{timestamp(hit.start)}–{timestamp(end)}"


_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x20)) + [0x7F]}
_CONTROL.update({0x9B: "\\x9b"})  # the one-byte CSI


def literal(text: str) -> str:
    """A path or name exactly as stored, safe for a terminal: control characters (escape
    sequences, newlines) shown as ``\\xNN``, undecodable bytes as ``\\udcNN`` escapes."""
    safe = text.translate(_CONTROL)
    return safe.encode("utf-8", "backslashreplace").decode("utf-8")


def _plain(text: str) -> Text:
    """Rich text that is never parsed as markup (a folder named ``[bold]`` stays as typed)."""
    return Text(literal(text))


def results_table(hits: list[SearchResult], query: str) -> Table:
    table = Table(title=_plain(f"Results for {query}"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("kind")
    table.add_column("path", overflow="fold")
    show_when = any(h.start is not None for h in hits)
    if show_when:
        table.add_column("when")
    show_text = any(h.text for h in hits)
    if show_text:
        table.add_column("passage", overflow="fold", max_width=60)
    for h in hits:
        row = [str(h.rank), f"{h.score:.3f}", h.kind, _plain(h.path)] + ([span(h)] if show_when else [])
        if show_text:
            row.append(_plain((h.text or "")[:200]))
        table.add_row(*row)
    return table


def explain_table(hits: list[SearchResult]) -> Table:
    """Each result's score parts: which ranker or stage said what, and the rank it gave."""
    table = Table(title="Why these results", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    sources = list(dict.fromkeys(p.source for h in hits for p in h.parts))
    for source in sources:
        table.add_column(source, justify="right")
    for h in hits:
        cells = []
        for source in sources:
            part = h.part(source)
            if part is None:
                cells.append("-")
            else:
                cells.append(f"{part.score:.3f}" + (f" (#{part.rank})" if part.rank else ""))
        table.add_row(str(h.rank), f"{h.score:.3f}", *cells)
    return table


def duplicates_table(groups: list) -> Table:
    table = Table(title="Near-duplicate groups", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("similarity", justify="right")
    table.add_column("files", overflow="fold")
    for i, g in enumerate(groups, start=1):
        files = Text("\n").join(_plain(path) for path in g.paths)  # a newline between names, escaped in one
        table.add_row(str(i), f"{g.similarity:.3f}", files)
    return table


def results_json_lines(hits: list[SearchResult]) -> str:
    return "\n".join(json.dumps(h.to_dict()) for h in hits)


def summary_table(summary: IndexSummary) -> Table:
    table = Table(title="Indexing summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label in ("new", "changed", "moved", "deleted", "unchanged"):
        table.add_row(label, str(getattr(summary, label)))
    table.add_row("skipped", str(len(summary.skipped)))
    table.add_row("items added", str(summary.items_added))
    if summary.tagged:
        table.add_row("pictures tagged", str(summary.tagged))
    if summary.ocr_pictures:
        each = summary.ocr_seconds / summary.ocr_pictures
        table.add_row("files read (OCR)", f"{summary.ocr_pictures} ({each:.2f} s each)")
    rate = summary.files_per_second()
    table.add_row("time", f"{summary.seconds:.1f} s" + (f" ({rate:.1f} files/s)" if rate else ""))
    for name, timing in summary.stages.items():
        if timing.items:
            each = " per worker" if name == "decode" and timing.workers > 1 else ""
            table.add_row(f"  {name}", f"{timing.seconds:.1f} s, {timing.items_per_second:.1f}/s{each}")
        elif timing.seconds >= 0.05:
            table.add_row(f"  {name}", f"{timing.seconds:.1f} s")
    return table


def skipped_table(summary: IndexSummary) -> Table:
    return _files_table("Skipped files", "reason", [(s.path, s.reason) for s in summary.skipped])


def truncated_table(summary: IndexSummary) -> Table:
    return _files_table("Indexed in part", "what was kept", [(t.path, t.note) for t in summary.truncated])


def _files_table(title: str, why: str, rows: list[tuple[str, str]]) -> Table:
    """Files with a note each, printed literally."""
    table = Table(title=title, title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column(why, overflow="fold")
    for path, note in rows:
        table.add_row(_plain(path), _plain(note))
    return table


def profile_table(profile: dict) -> Table:
    model = profile["model"]
    kind = "none yet" if model is None else f"{model['kind']} from {model['events']} judgements"
    table = Table(title=_plain(f"What mmsearch learned for {profile['user']}: {kind}"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("judgement")
    table.add_column("file", overflow="fold")
    table.add_column("query", overflow="fold")
    for i, e in enumerate(profile["events"], start=1):
        where = e["path"] or "(no longer in the collection)"
        table.add_row(str(i), "👍 good" if e["label"] > 0 else "👎 bad", _plain(where), _plain(e["query"] or ""))
    words = (model or {}).get("concepts") or {}
    if words:
        shown = ", ".join(f"{'more' if w > 0 else 'less'} {_plain(name)} ({w:+.2f})" for name, w in list(words.items())[:8])
        more = f" and {len(words) - 8} more (profile export)" if len(words) > 8 else ""
        table.caption = f"In words, you like: {shown}{more}"
        table.caption_justify = "left"
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def status_table(status: CollectionStatus) -> Table:
    table = Table(title=_plain(f"mmsearch collection at {status.home}"), title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("model", f"{status.model} ({status.dim}-d)" if status.model else "none yet")
    table.add_row("folders", _plain("\n".join(f.path for f in status.folders) or "none"))
    table.add_row("files", ", ".join(f"{k}: {v}" for k, v in sorted(status.assets_by_kind.items())) or "0")
    table.add_row("items", ", ".join(f"{k}: {v}" for k, v in sorted(status.items_by_kind.items())) or "0")
    table.add_row("index", f"{status.index_kind} ({status.index_count} vectors)" if status.index_kind else "not built yet")
    table.add_row("disk used", _size(status.disk_bytes))
    table.add_row("catalog check", _plain(status.catalog_health))
    state = {
        "level": "level with the catalog",
        "behind": "behind the catalog: the next search or index run catches it up and saves it",
        "missing": "not saved yet: built from the catalog when needed",
        "foreign": "from another home: rebuilt from this catalog when needed",
    }.get(status.index_state, status.index_state)
    table.add_row("index state", state)
    if status.itm or status.patches_stored or status.patches_missing:
        table.add_row("itm reranker", _itm_row(status))
    return table


def _itm_row(status: CollectionStatus) -> str:
    name = status.itm or "none for this model"
    stored = f"patch features for {status.patches_stored} pictures"
    if status.patch_bytes_per_item:
        stored += f" ({status.patch_bytes_per_item:,} bytes each)"
    if status.patches_missing:
        stored += (
            f"; {status.patches_missing} pictures have none and keep their CLIP place "
            "(`mmsearch index --patches FOLDER` adds them)"
        )
    return _plain(f"{name}: {stored}")

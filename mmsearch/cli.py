"""The `mmsearch` command: a thin Typer layer over `Engine`.

Library errors (`MmsearchError`) become one readable line on stderr and an exit code.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from mmsearch.errors import MmsearchError

app = typer.Typer(
    name="mmsearch",
    help="Search your photos, videos, recordings and notes by meaning, on your own machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Collection home (default: $MMSEARCH_HOME, else the per-user data dir).", show_default=False),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Encoder name, chosen when a home is first indexed and remembered "
                 "(default ViT-B-32/laion2b_s34b_b79k; 'tiny' works offline).", show_default=False),
]
TypeOpt = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Only these file types: image, video, audio, text (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


@app.callback()
def main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)], force=True)


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning library errors into a message and an exit code."""
    try:
        return fn()
    except MmsearchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; committed work is kept, run the same command again to finish.")
        raise typer.Exit(130) from None


def _engine(home: Path | None, model: str | None = None, device: str = "auto"):
    from mmsearch.engine import Engine

    return Engine(home=home, model=model, device=device)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or files) to index; re-running updates incrementally.")],
    home: HomeOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    workers: Annotated[int, typer.Option(help="Decoding processes (0 = one per core).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Items per encoder batch.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Index folders: new files are added, changed ones re-encoded, moved ones kept, deleted ones removed."""
    from indexer.pipeline import IndexOptions
    from mmsearch.cli_output import RichProgress, skipped_table, summary_table

    def body():
        with _engine(home, model, device) as engine:
            progress = None if as_json else RichProgress(err)
            summary = engine.index(paths, options=IndexOptions(workers=workers, batch_size=batch_size), progress=progress)
        if as_json:
            out.print_json(json.dumps(_summary_dict(summary)))
            return
        out.print(summary_table(summary))
        if summary.skipped:
            out.print(skipped_table(summary))

    _run(body)


def _summary_dict(summary) -> dict:
    from dataclasses import asdict

    return asdict(summary)


@app.command()
def query(
    text: Annotated[str | None, typer.Argument(help='What to look for, e.g. "a red car".', show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", "-i", help="Search by this picture instead of text.", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Number of results.")] = 10,
    types: TypeOpt = None,
    no_group: Annotated[bool, typer.Option("--no-group", help="Show every keyframe/window instead of grouping adjacent hits.")] = False,
    home: HomeOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: path, score, kind, item_id, start/end, text.")] = False,
) -> None:
    """Search the collection with a sentence or (with --image) a picture."""
    from mmsearch.cli_output import results_json_lines, results_table

    def body():
        with _engine(home, model, device) as engine:
            hits = engine.search(text, top, image=image, types=types, group=not no_group)
        if as_json:
            if hits:
                print(results_json_lines(hits))
            return
        if not hits:
            out.print("No results.")
            return
        out.print(results_table(hits, repr(text) if text is not None else str(image)))

    _run(body)


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the model, folders, counts by kind, index type and disk used."""
    from mmsearch.cli_output import status_table

    def body():
        with _engine(home) as engine:
            st = engine.status()
        if as_json:
            print(json.dumps(st.to_dict()))
        else:
            out.print(status_table(st))

    _run(body)


@app.command()
def rebuild(
    home: HomeOpt = None,
    kind: Annotated[str, typer.Option(help="Index type: auto, flat, ivf, hnsw or torch.")] = "auto",
) -> None:
    """Rebuild the vector index from the catalog's stored vectors (no re-encoding)."""

    def body():
        with _engine(home) as engine:
            n = engine.rebuild(kind)
        out.print(f"Rebuilt the {kind} index with {n} vectors.")

    _run(body)


@app.command()
def serve(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; the default keeps it to this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 8765,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Serve the search page and the HTTP API (GET /api/search?q=...) until Ctrl+C."""

    def body():
        from mmsearch.server import serve as run_server

        def announce(url: str) -> None:
            out.print(f"mmsearch is serving {url} (Ctrl+C to stop)", highlight=False, soft_wrap=True)

        run_server(home, model, host=host, port=port, device=device, announce=announce)

    _run(body)


@app.command()
def models() -> None:
    """List model names: the bundled tiny, OpenCLIP ARCH/TAG pairs, and name forms for local files."""
    from mmsearch.models import list_models

    for name in list_models():
        print(name)
    print("(also: hf-hub:ORG/REPO, local-dir:/folder, /path/weights.safetensors, ARCH@/path/ckpt.pt)")


@app.command()
def demo(
    home: HomeOpt = None,
    data: Annotated[Path, typer.Option(help="Sample photo folder (rendered from the shapes world if missing).")] = Path("data/sample/photos"),
    n: Annotated[int, typer.Option(help="Photos to render when the folder is missing.")] = 120,
) -> None:
    """Offline end-to-end demo: render sample photos, index them with the bundled `tiny` model, query."""
    from mmsearch.cli_output import results_table, skipped_table, summary_table

    def body():
        from mmsearch.synth.media import write_photo_folder

        if not (data / "captions.jsonl").exists():
            out.print(f"Rendering {n} sample photos into {data} ...")
            write_photo_folder(data, n, seed=0)
        demo_home = home or data.parent / "home"
        from indexer.pipeline import IndexOptions
        from mmsearch.cli_output import RichProgress

        with _engine(demo_home, "tiny") as engine:
            summary = engine.index([data], options=IndexOptions(), progress=RichProgress(err))
            out.print(summary_table(summary))
            if summary.skipped:
                out.print(skipped_table(summary))
            for q in ("a red circle", "a blue square", "two green triangles", "a large yellow star on the left"):
                out.print(results_table(engine.search(q, 5), repr(q)))
        out.print(f"\nThe demo collection lives in {demo_home}. Try: mmsearch query --home {demo_home} \"a purple diamond\"")

    _run(body)


def run() -> None:  # pragma: no cover - console entry for `python -m mmsearch.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""The `mmsearch` command: a thin Typer layer over `Engine`.

Library errors (`MmsearchError`) become one readable line on stderr and an exit code.
"""

from __future__ import annotations

import json
import logging
import os
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
CatalogOpt = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog database URL, e.g. postgresql://USER@HOST/DB (default: $MMSEARCH_CATALOG, "
                 "else the one recorded in the home, else catalog.db in the home). Recorded in the home without "
                 "its password (later: PGPASSWORD or ~/.pgpass).", show_default=False),
]
VectorsOpt = Annotated[
    str | None,
    typer.Option("--vectors", help="Vector store: faiss (the default, a file in the home), milvus-lite:PATH.db (Milvus Lite, "
                 "a relative PATH is in the home) or milvus://HOST:PORT/COLLECTION (a Milvus server; token in "
                 "$MMSEARCH_MILVUS_TOKEN). Default: $MMSEARCH_VECTORS, else the one recorded in the collection's catalog; "
                 "an index run records it (moving the vectors there); other commands refuse one that differs.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto (fp16 on CUDA; for models of 20M+ parameters on the CPU: bf16 where it has AMX or AVX-512 BF16, else int8 for a ViT image tower; else fp32), fp32, bf16, fp16 or int8.")]


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
        from rich.text import Text

        from mmsearch.cli_output import literal

        err.print(Text("error: ", style="bold red") + Text(literal(str(exc))), highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during an index run (143)
        err.print("interrupted; committed work is kept, run the same command again to finish.")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None


def _engine(home: Path | None, model: str | None = None, device: str = "auto", **kw):
    from mmsearch.engine import Engine

    return Engine(home=home, model=model, device=device, **kw)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (or files) to index; re-running updates incrementally.")],
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    workers: Annotated[int, typer.Option(help="Decoding processes (0 = one per core).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Items per encoder batch (0 = auto: 32 on a CPU, 64 on a GPU).")] = 0,
    follow_links: Annotated[str, typer.Option("--follow-links", help="Symbolic links to follow: inside (those that stay in the indexed folders), all, or none.")] = "inside",
    index_kind: Annotated[str | None, typer.Option("--index-kind", help="Vector index: auto (flat, HNSW past 50,000 vectors, IVF-PQ with float16 re-scoring past 2 million), flat, hnsw, ivf, ivfpq or torch; saved in the home.", show_default=False)] = None,
    ocr: Annotated[bool | None, typer.Option("--ocr/--no-ocr", help="Read the words in pictures (Tesseract, English and Chinese; costs time) so text searches find them. Remembered by the collection; --ocr also reads pictures indexed without it.", show_default=False)] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Decode and encode on a Ray cluster: auto (the running one: $RAY_ADDRESS or `ray start`; else one started here), local (start one here for the run) or the address of a cluster this machine joined (HOST:6379; not ray://, which Ray Data does not run over). This machine commits. Needs mmsearch[ray].", show_default=False)] = None,
    patches: Annotated[bool | None, typer.Option("--patches/--no-patches", help="Store each picture's patch features (4 KB) for the itm reranker. Default: when the model has an ITM companion. --patches also adds them to pictures indexed without them.", show_default=False)] = None,
    jpeg_decoder: Annotated[str, typer.Option("--jpeg-decoder", help="Where JPEGs are decoded: auto (device on a GPU, else pillow), device (in batches on the encoder's device: nvjpeg on a GPU) or pillow (in the worker processes).")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Index folders: new files are added, changed ones re-encoded, moved ones kept, deleted ones removed."""
    from indexer.pipeline import IndexOptions
    from mmsearch.cli_output import RichProgress, skipped_table, summary_table, truncated_table

    def body():
        with _engine(home, model, device, precision=precision, index_kind=index_kind, catalog_url=catalog, vector_store=vectors) as engine:
            progress = None if as_json else RichProgress(err)
            summary = engine.index(paths, options=IndexOptions(workers=workers, batch_size=batch_size, follow_symlinks=follow_links, patches=patches, ocr=ocr, ray=ray, jpeg_decoder=jpeg_decoder), progress=progress)
        if as_json:
            out.print_json(json.dumps(_summary_dict(summary)))
            return
        out.print(summary_table(summary))
        if summary.skipped:
            out.print(skipped_table(summary))
        if summary.truncated:
            out.print(truncated_table(summary))

    _run(body)


def _summary_dict(summary) -> dict:
    from dataclasses import asdict

    return {**asdict(summary), "stage_rates": summary.stage_rates()}


@app.command(context_settings={"allow_interspersed_args": True})
def query(
    terms: Annotated[list[str] | None, typer.Argument(help='What to look for: "a red car", or a compound query like "2:red car" + ./beach.jpg - night (see the README).', show_default=False)] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", "-i", help="Search by this picture (repeatable; adds to the terms).", show_default=False)] = None,
    like: Annotated[list[str] | None, typer.Option("--like", help="More like this indexed item: an item id from a result, or an indexed file's path (repeatable).", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--k", "--top", help="Number of results.")] = 10,
    offset: Annotated[int, typer.Option(help="Skip this many results (paging).")] = 0,
    types: TypeOpt = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="Only files whose path matches this glob or folder (repeatable): '*.png', '~/Pictures/2023', 'trips/*/beach*'.", show_default=False)] = None,
    after: Annotated[str | None, typer.Option(help="Only files taken (else modified) on or after this ISO date, e.g. 2024-06-01.", show_default=False)] = None,
    before: Annotated[str | None, typer.Option(help="Only files taken (else modified) before this ISO date.", show_default=False)] = None,
    min_width: Annotated[int | None, typer.Option(help="Only pictures and videos at least this many pixels wide.", show_default=False)] = None,
    min_height: Annotated[int | None, typer.Option(help="Only pictures and videos at least this many pixels high.", show_default=False)] = None,
    camera: Annotated[str | None, typer.Option(help="Only photos whose camera make/model contains this text.", show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only pictures with this zero-shot tag (repeatable: all of them; see `mmsearch tags`).", show_default=False)] = None,
    min_duration: Annotated[float | None, typer.Option(help="Only videos/recordings at least this many seconds long.", show_default=False)] = None,
    max_duration: Annotated[float | None, typer.Option(help="Only videos/recordings at most this many seconds long.", show_default=False)] = None,
    min_score: Annotated[float | None, typer.Option(help="Drop results whose CLIP cosine to the query is below this (also what --count counts).", show_default=False)] = None,
    sort: Annotated[str, typer.Option(help="relevance, date (oldest first) or -date (newest first); dates order the most relevant results.")] = "relevance",
    cutoff: Annotated[str | None, typer.Option(help="'auto': stop where the scores drop (a gap after the top hits).", show_default=False)] = None,
    count: Annotated[bool, typer.Option("--count", help="Print how many items score at least --min-score, instead of results.")] = False,
    no_group: Annotated[bool, typer.Option("--no-group", help="Show every keyframe/window instead of grouping adjacent hits.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Show each result's score parts (which ranker said what).")] = False,
    rerank: Annotated[list[str] | None, typer.Option("--rerank", help="Rerankers to run (repeatable): itm, mmr, cross-encoder; 'none' turns all off. Default: itm when the model has one, then mmr.", show_default=False)] = None,
    user: Annotated[str | None, typer.Option("--user", help="Whose feedback personalises the order (default: your OS user name).", show_default=False)] = None,
    no_personal: Annotated[bool, typer.Option("--no-personal", help="No personalisation: the same order for everyone.")] = False,
    cross_encoder: Annotated[str | None, typer.Option("--cross-encoder", help="Weights for --rerank cross-encoder: a local folder or a hub name (or $MMSEARCH_CROSS_ENCODER).", show_default=False)] = None,
    itm_model: Annotated[str | None, typer.Option("--itm-model", help="Image-text matching model for --rerank itm: tiny-itm, a folder, a BLIP ITM repo, or none (or $MMSEARCH_ITM). Default: the model's companion.", show_default=False)] = None,
    paths_only: Annotated[bool, typer.Option("--paths-only", "-f", help="Print only the paths, one per line, for pipes (into a pipe: the real names, bytes and all).")] = False,
    null: Annotated[bool, typer.Option("--null", "-0", help="With -f: end each path with a NUL byte, not a newline (xargs -0), for names that hold newlines.")] = False,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: path, score, kind, item_id, start/end, text, parts.")] = False,
) -> None:
    """Search the collection with words, pictures, items, or a mix of them with weights and signs."""
    from mmsearch.cli_output import explain_table, results_json_lines, results_table
    from mmsearch.engine import default_user
    from mmsearch.query.model import Filters, posix_seconds
    from mmsearch.query.parse import parse_terms, picture_term

    def body():
        filters = Filters(
            types=frozenset(types or ()), paths=tuple(path or ()), after=posix_seconds(after, "--after"),
            before=posix_seconds(before, "--before"), min_width=min_width, min_height=min_height,
            camera=camera, min_duration=min_duration, max_duration=max_duration,
            tags=tuple(tag or ()),
        )
        with _engine(home, model, device, precision=precision, cross_encoder=cross_encoder, itm=itm_model, catalog_url=catalog, vector_store=vectors) as engine:
            parsed = parse_terms(terms or [])
            parsed += [picture_term(str(picture)) for picture in image or ()]
            q = engine.build_query(
                parsed, k, filters=filters, offset=offset, sort=sort, cutoff=cutoff,
                min_score=min_score, group=not no_group, explain=explain, like=like or None,
                rerank=tuple(rerank) if rerank else None,
                user=None if no_personal else (user or default_user()),
            )
            if count:
                print(engine.count(q, min_score if min_score is not None else 0.0))
                return
            hits = engine.search(q)
        if as_json:
            if hits:
                print(results_json_lines(hits))
            return
        if paths_only:  # raw bytes into a pipe (for xargs); made safe on a terminal
            from mmsearch.cli_output import literal
            from mmsearch.paths import key_path

            tty = sys.stdout.isatty()
            end = b"\0" if null else b"\n"
            for h in hits:
                if tty:
                    print(literal(h.path), end=end.decode())
                else:  # the file's real name, bytes and all (catalog keys escape undecodable bytes)
                    sys.stdout.flush()
                    sys.stdout.buffer.write(os.fsencode(key_path(h.path)) + end)
            sys.stdout.flush()
            return
        if not hits:
            out.print("No results.")
            return
        out.print(results_table(hits, q.describe()))
        if explain:
            out.print(explain_table(hits))

    _run(body)


UserOpt = Annotated[str | None, typer.Option("--user", help="Whose feedback (default: your OS user name).", show_default=False)]


@app.command()
def feedback(
    item: Annotated[str, typer.Argument(help="An item id from a result, or an indexed file's path.")],
    good: Annotated[bool, typer.Option("--good/--bad", help="👍 more like this in my searches, or 👎 less.")],
    user: UserOpt = None,
    query: Annotated[str | None, typer.Option("--query", help="What you had searched for (kept with the judgement).", show_default=False)] = None,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
) -> None:
    """Tell mmsearch a result was good or bad for you; later searches lean your way."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            event = engine.feedback(item, good, user=user, query=query)
            n = engine.collection.catalog.feedback_count(event.user)
        from mmsearch.cli_output import literal

        verdict = "good" if good else "bad"
        print(literal(f"Noted: {event.path} is {verdict} for {event.user} ({n} judgements so far)."))

    _run(body)


profile_app = typer.Typer(help="See, export or forget what mmsearch learned from your feedback.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
def profile_show(user: UserOpt = None, home: HomeOpt = None, catalog: CatalogOpt = None, vectors: VectorsOpt = None) -> None:
    """Your judgements (resolved to today's files) and the kind of model they train."""
    from mmsearch.cli_output import profile_table

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            out.print(profile_table(engine.profile(user)))

    _run(body)


@profile_app.command("export")
def profile_export(user: UserOpt = None, home: HomeOpt = None, catalog: CatalogOpt = None, vectors: VectorsOpt = None) -> None:
    """Everything learned for you, as JSON: the judgements and the model's weights."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            print(json.dumps(engine.profile(user), indent=2, default=str))

    _run(body)


@profile_app.command("reset")
def profile_reset(user: UserOpt = None, home: HomeOpt = None, catalog: CatalogOpt = None, vectors: VectorsOpt = None) -> None:
    """Forget your feedback: searches go back to the same order for you as for everyone."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            n = engine.reset_profile(user)
        out.print(f"Forgot {n} judgements.")

    _run(body)


tags_app = typer.Typer(
    help="Zero-shot tags: list them with counts, or change the vocabulary (pictures are re-tagged from stored vectors, never re-encoded).",
    invoke_without_command=True,
)
app.add_typer(tags_app, name="tags")


@tags_app.callback()
def tags_list(
    ctx: typer.Context,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per tag: tag, count.")] = False,
) -> None:
    """The collection's tags with how many pictures carry each (`--tag NAME` filters searches)."""
    if ctx.invoked_subcommand is not None:
        return

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            counts = engine.tags()
            size = len(engine.tag_vocabulary())
        if as_json:
            for tag, n in counts:
                print(json.dumps({"tag": tag, "count": n}))
            return
        if not counts:
            out.print(f"No tags yet ({size} in the vocabulary): run `mmsearch index` on a folder.")
            return
        width = max(len(t) for t, _ in counts)
        for tag, n in counts:
            print(f"{tag:<{width}}  {n}")

    _run(body)


@tags_app.command("vocabulary")
def tags_vocabulary(home: HomeOpt = None, catalog: CatalogOpt = None, vectors: VectorsOpt = None) -> None:
    """Print the vocabulary in use (the file form `tags use` reads)."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            print(engine.tag_vocabulary().to_text(), end="")

    _run(body)


@tags_app.command("use")
def tags_use(
    file: Annotated[Path, typer.Argument(help="A vocabulary file: one tag per line, optional `= prompt | prompt`, [group] headers.")],
    extend: Annotated[bool, typer.Option("--extend", help="Add its tags to the current vocabulary instead of replacing it.")] = False,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
) -> None:
    """Tag with your own vocabulary (or add to it); every picture is re-tagged from its stored vector."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            n = engine.use_tag_vocabulary(file, extend=extend)
            size = len(engine.tag_vocabulary())
        out.print(f"Re-tagged {n} pictures with {size} tags.")

    _run(body)


@tags_app.command("add")
def tags_add(
    names: Annotated[list[str], typer.Argument(help="Tags to add, e.g. 'hot air balloon'.")],
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="How to describe the tag to the model (repeatable; default: 'a photo of a NAME.' and similar).", show_default=False)] = None,
    group: Annotated[str | None, typer.Option(help="The group whose tags it competes with (default: 'tags').", show_default=False)] = None,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
) -> None:
    """Add tags to the vocabulary and re-tag (from stored vectors)."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            n = engine.add_tags(names, group=group, prompts=prompt or ())
        out.print(f"Re-tagged {n} pictures.")

    _run(body)


@tags_app.command("remove")
def tags_remove(
    names: Annotated[list[str], typer.Argument(help="Tags to drop from the vocabulary.")],
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
) -> None:
    """Remove tags from the vocabulary and re-tag."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            n = engine.remove_tags(names)
        out.print(f"Re-tagged {n} pictures.")

    _run(body)


@app.command()
def duplicates(
    threshold: Annotated[float, typer.Option(help="Cosine similarity at or above which two pictures count as near-identical.")] = 0.95,
    types: Annotated[list[str] | None, typer.Option("--type", "-t", help="File types to compare (default image; add video for keyframes).", show_default=False)] = None,
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per group: paths, item_ids, similarity.")] = False,
) -> None:
    """List groups of near-identical files: bursts, re-encodes, resized copies."""
    from mmsearch.cli_output import duplicates_table

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            groups = engine.duplicates(threshold, types or ("image",))
        if as_json:
            for g in groups:
                print(json.dumps(g.to_dict()))
            return
        if not groups:
            out.print(f"No near-duplicates at similarity >= {threshold}.")
            return
        out.print(duplicates_table(groups))

    _run(body)


@app.command()
def status(home: HomeOpt = None, catalog: CatalogOpt = None, vectors: VectorsOpt = None, as_json: JsonOpt = False) -> None:
    """Show the model, folders, counts by kind, index type and disk used."""
    from mmsearch.cli_output import status_table

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            st = engine.status()
        if as_json:
            print(json.dumps(st.to_dict()))
        else:
            out.print(status_table(st))
        if not st.healthy:
            from mmsearch.errors import CatalogError

            raise CatalogError(
                f"The catalog at {st.home} is damaged ({st.catalog_health}): restore it from a "
                "backup, or index into a new home (see docs/RECOVERY.md)."
            )

    _run(body)


@app.command()
def rebuild(
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    kind: Annotated[str | None, typer.Option(help="Index type: auto, flat, ivf, hnsw or torch (saved in the home; default: the home's).", show_default=False)] = None,
) -> None:
    """Rebuild the vector index from the catalog's stored vectors (no re-encoding)."""

    def body():
        with _engine(home, catalog_url=catalog, vector_store=vectors) as engine:
            n = engine.rebuild(kind)
            chosen = engine.collection.index_kind
        out.print(f"Rebuilt the {chosen} index with {n} vectors.")

    _run(body)


@app.command()
def serve(
    home: HomeOpt = None,
    catalog: CatalogOpt = None,
    vectors: VectorsOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; the default keeps it to this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).", min=0, max=65535)] = 8765,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    token: Annotated[str | None, typer.Option(help="Access token the API requires (safer: $MMSEARCH_TOKEN). Beyond loopback one is generated if not given.")] = None,
    allow_host: Annotated[list[str] | None, typer.Option(help="Another name the server may be reached by, e.g. behind a proxy (repeatable).")] = None,
    itm_model: Annotated[str | None, typer.Option("--itm-model", help="Image-text matching model for the itm reranker (or $MMSEARCH_ITM); 'none' turns it off.", show_default=False)] = None,
    cross_encoder: Annotated[str | None, typer.Option("--cross-encoder", help="Weights for the cross-encoder reranker (or $MMSEARCH_CROSS_ENCODER).", show_default=False)] = None,
) -> None:
    """Serve the search page and the HTTP API (GET /api/search?q=...) until Ctrl+C."""

    def body():
        from mmsearch.server import serve as run_server

        def announce(url: str) -> None:
            out.print(f"mmsearch is serving {url} (Ctrl+C to stop)", highlight=False, soft_wrap=True)

        run_server(
            home, model, host=host, port=port, device=device, announce=announce,
            token=token, allow_hosts=allow_host or (),
            engine_options={"itm": itm_model, "cross_encoder": cross_encoder, "catalog_url": catalog, "vector_store": vectors, "precision": precision},
        )

    _run(body)


@app.command()
def finetune(
    images: Annotated[Path, typer.Option("--images", help="Folder of your pictures.")],
    captions: Annotated[Path, typer.Option("--captions", help="CSV (path,caption) or JSONL ({path, caption}) with paths relative to --images; several rows per picture are fine.")],
    name: Annotated[str | None, typer.Option("--name", help="Register the result under this model name (default: MODEL-finetuned).", show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", help="The model to start from.")] = "tiny",
    epochs: Annotated[int, typer.Option(help="Passes over the training pictures.")] = 5,
    lr: Annotated[float, typer.Option(help="Peak learning rate (small: pretrained weights forget fast).")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Pictures per step.")] = 32,
    held_out: Annotated[float, typer.Option(help="Share of the pictures kept out of training to measure recall on.")] = 0.2,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a registered model of that name.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a model on your captioned pictures; prints recall@1/5/10 on held-out pictures before and after, and registers the result as a model name."""
    from mmsearch.train.finetune import register_finetune
    from mmsearch.train.loop import LoopConfig

    def body():
        chosen = name or f"{model.replace('/', '-').replace('@', '-')}-finetuned"
        loop = LoopConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=10)
        from rich.progress import Progress

        with Progress(transient=True, console=err) as progress:
            task = progress.add_task("Fine-tuning", total=epochs)

            def on_epoch(epoch: int, loss: float) -> None:
                progress.update(task, completed=epoch + 1, description=f"Fine-tuning (loss {loss:.3f})")

            report = register_finetune(
                chosen, model, images, captions, loop, held_out=held_out, replace=replace,
                on_epoch=on_epoch,
            )
        if as_json:
            from dataclasses import asdict

            print(json.dumps({"name": chosen, **asdict(report)}))
        else:
            out.print(
                f"Fine-tuned {model} on {report.train_images} pictures ({report.steps} steps, "
                f"{report.seconds} s); held-out recall on {report.held_out_images} pictures:"
            )
            for k in sorted(report.recall_before):
                out.print(f"  R@{k}: {report.recall_before[k]:.3f} -> {report.recall_after[k]:.3f}")
            out.print(f"Registered as '{chosen}' ({report.saved_to}); report beside it.", highlight=False)
        _tell_about_reindexing(home, chosen)

    _run(body)


def _tell_about_reindexing(home: Path | None, name: str) -> None:
    """A collection keeps its model: say how to search with the new one (never mixing vectors)."""
    from mmsearch.catalog import location
    from mmsearch.paths import data_home

    target = data_home(home)
    if not location.configured(target, None):
        return
    with _engine(home) as engine:
        bound = engine.collection.encoder_name()
    if bound is not None:
        out.print(
            f"The collection at {target} holds '{bound}' vectors; to search with '{name}', index "
            f"into a new home: mmsearch index FOLDERS --model {name} --home NEW_HOME",
            highlight=False, soft_wrap=True,
        )


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


def run() -> None:
    """The console script: the app, then an exit that skips the interpreter's teardown.

    Tearing down a process that imported torch (its CUDA build) and held a model costs 3-5 s on
    2 cores after the work is done: module and object clean-up nobody waits for. Everything the
    command wrote is closed by then (the collection, the worker pool, the catalog), so this
    waits for any non-daemon thread (as the interpreter would), runs the `atexit` handlers
    (logging, multiprocessing, Ray), flushes the output and leaves.
    """
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    status = quick_exit_code(code)
    if _may_exit_quickly():
        _exit_now(status)
    sys.exit(status)


def quick_exit_code(code: int | str | None) -> int:
    """What `sys.exit(code)` would make the exit status: None is 0, a message is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _may_exit_quickly() -> bool:
    """Not where someone else owns the process's end (`MMSEARCH_NO_QUICK_EXIT=1`, e.g. profiling)."""
    return os.environ.get("MMSEARCH_NO_QUICK_EXIT", "") not in ("1", "true", "yes")


def _exit_now(code: int) -> None:  # pragma: no cover - ends the process
    import atexit
    import threading

    for thread in threading.enumerate():  # what the interpreter waits for before its atexit
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mmsearch query ... | head`)
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()

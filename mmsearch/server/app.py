"""The FastAPI app: search by text or picture, status, thumbnails, original files, the web page.

One `Engine` serves every request. Endpoints are plain `def`s, so FastAPI runs them in its
thread pool; searches run concurrently, at most `MAX_CONCURRENT_SEARCHES` at a time (the
collection's readers-writer lock keeps its in-memory stores steady while a search reads them),
and a request that finds no free slot within `SLOT_WAIT_S` gets 503. File I/O (thumbnails,
downloads) happens outside the slots so a slow disk never stalls searches.

Errors keep one JSON shape, ``{"error": message}``, with the status code chosen from the
`MmsearchError` subclass (see `STATUS_BY_ERROR`).
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmsearch.engine import Engine, default_user
from mmsearch.errors import (
    CatalogError,
    ConfigError,
    DecodeError,
    EncoderMismatchError,
    MissingDependencyError,
    MmsearchError,
    ModelError,
    ModelUnavailableError,
    NotFoundError,
    QueryError,
    VectorIndexError,
)
from mmsearch.paths import key_path
from mmsearch.query.model import Filters, Term
from mmsearch.results import SearchResult, SearchResults
from mmsearch.server import media, security

log = logging.getLogger(__name__)

T = TypeVar("T")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a query picture; phone photos are 2-12 MB
MAX_K = 500  # results per request; a page never shows more
THUMBNAIL_KINDS = ("image", "keyframe", "ocr")  # item kinds that have a picture to show

# Browsers may keep a thumbnail for a day: item ids are never reissued, and a changed file gets
# new items (new ids) when it is re-indexed.
THUMBNAIL_CACHE_CONTROL = "private, max-age=86400"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Original files are the user's own, but a document opened in the API's origin must not run
# script there; PDFs are left alone because browsers' PDF viewers refuse sandboxed documents.
FILE_CSP = "sandbox"


MAX_CONCURRENT_SEARCHES = 4  # searches run at once; on 2 cores more only add queueing
SLOT_WAIT_S = 30.0  # a request waits at most this long for a search slot, then gets 503
REQUEST_TIMEOUT_S = 60.0  # a call that runs longer is answered 504 (it finishes in its slot)


class ServerBusy(MmsearchError):
    """Every search slot stayed taken for the whole wait: the client should retry (503)."""


class RequestTimeout(MmsearchError):
    """A call ran past the request time limit; the client gets 504 while it finishes."""


class CollectionNotReady(ConfigError):
    """There is no collection at the home yet, or it is empty: nothing can be searched (503)."""


# Most specific first: the first class an error is an instance of decides the status code.
STATUS_BY_ERROR: tuple[tuple[type[MmsearchError], int], ...] = (
    (CollectionNotReady, 503),
    (ServerBusy, 503),
    (RequestTimeout, 504),
    (NotFoundError, 404),
    (media.DecodeBusy, 503),
    (QueryError, 400),
    (DecodeError, 400),
    (ConfigError, 400),
    (EncoderMismatchError, 409),
    (ModelUnavailableError, 503),
    (ModelError, 500),
    (MissingDependencyError, 500),
    (CatalogError, 500),
    (VectorIndexError, 500),
)


def status_for(exc: MmsearchError) -> int:
    """The HTTP status code for a library error; unknown kinds are server faults (500)."""
    for cls, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return 500


class EngineHost:
    """Owns the app's one Engine; runs calls into it concurrently, at most `slots` at a time.

    The engine is safe for concurrent searches (its collection holds the stores steady with a
    readers-writer lock while catching up with new commits). A request that waits longer than
    `wait_s` for a slot is answered 503 rather than queueing without bound.
    """

    def __init__(
        self,
        factory: Callable[[], Engine],
        slots: int = MAX_CONCURRENT_SEARCHES,
        wait_s: float = SLOT_WAIT_S,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._factory = factory
        self._engine: Engine | None = None
        self._create = threading.Lock()
        self._slots = threading.BoundedSemaphore(slots)
        self._wait_s = wait_s
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="mmsearch-search")

    def _get(self) -> Engine:
        with self._create:
            if self._engine is None:
                self._engine = self._factory()
            return self._engine

    def call(self, fn: Callable[[Engine], T]) -> T:
        """Run fn with the engine in a free slot; says 'not ready' (503) when there is no collection.

        A call that runs longer than `timeout_s` is answered 504; it keeps its slot until it
        ends, so a burst of slow requests cannot start more work than there are slots.
        """
        if not self._slots.acquire(timeout=self._wait_s):
            raise ServerBusy(
                f"The server is busy ({self._wait_s:.0f} s without a free search slot); try again."
            )
        try:
            future = self._pool.submit(self._run, fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        try:
            return future.result(timeout=self._timeout_s)
        except FutureTimeout:
            raise RequestTimeout(
                f"The search took longer than {self._timeout_s:.0f} s and was given up; narrow it "
                "(filters, a smaller k) or try again."
            ) from None

    def _run(self, fn: Callable[[Engine], T]) -> T:
        engine = self._get()
        try:
            return fn(engine)
        except CollectionNotReady:
            raise
        except ConfigError as exc:
            if not _has_collection(engine):
                raise CollectionNotReady(str(exc)) from exc
            raise

    def warm(self) -> None:
        """Load the model before the first search, when there is a collection to search."""
        try:
            self.call(_load_model)
        except MmsearchError as exc:
            log.warning("not loading the model yet: %s", exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._create:
            if self._engine is not None:
                self._engine.close()
                self._engine = None


def _has_collection(engine: Engine) -> bool:
    try:
        return engine.status().model is not None
    except ConfigError:
        return False


def _load_model(engine: Engine) -> None:
    if engine.status().model is None:
        raise CollectionNotReady(f"The collection at {engine.home} is empty: index a folder first.")
    engine.warm()  # a text search's models: no torch where the text tower was exported


def _item(engine: Engine, item_id: int) -> tuple[Any, media.IndexedFile] | None:
    """The catalog record of one item (with its stored thumbnail) and what its file must be, or None.

    The one place the server reads the catalog for files. Uses the engine's own collection so
    the server sees exactly what searches see.
    """
    catalog = engine.collection.catalog
    records = catalog.items_by_ids([item_id], with_thumbnails=True)
    if not records:
        return None
    record = records[0]
    # Catalog keys escape undecodable bytes (mmsearch.paths); the file system wants the real name.
    roots = tuple(os.fsdecode(key_path(folder.path)) for folder in catalog.list_folders())
    real = os.fsdecode(key_path(record.path))
    return record, media.IndexedFile(real, roots, record.asset.size, record.asset.mtime_ns)


def result_dict(hit: SearchResult) -> dict[str, Any]:
    """A hit as JSON, with the URLs a client needs to show it."""
    d = hit.to_dict()
    d["file_url"] = f"/api/items/{hit.item_id}/file"
    if hit.kind in THUMBNAIL_KINDS:
        d["thumbnail_url"] = f"/api/items/{hit.item_id}/thumbnail"
    return d


class UploadLimit:
    """ASGI middleware: refuse request bodies over a byte limit with 413, declared or streamed.

    A declared Content-Length over the limit is refused before the body is read; a chunked body
    is counted as it arrives, so a client cannot make the server spool an endless upload to disk.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"The upload is larger than {self.max_bytes // 2**20} MB: send a smaller picture."

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"error": self._message()}, status_code=413)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def create_app(
    engine_factory: Callable[[], Engine],
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    warm: bool = False,
    policy: security.SecurityPolicy | None = None,
) -> FastAPI:
    """Build the app around one engine; `warm` loads the model at start-up, not on the first search.

    `policy` says who may ask (Host names, token); the default answers loopback names only.
    """
    host = EngineHost(engine_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if warm:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(host.warm)
        yield
        host.close()

    app = FastAPI(title="mmsearch", summary="Cross-modal semantic search", lifespan=lifespan)
    app.state.engine_host = host
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    # Added last, so it runs first: a refused request never reaches the upload or the engine.
    app.add_middleware(security.SecurityGate, policy=policy or security.policy_for())
    _add_error_handlers(app)
    _add_search_routes(app, host, max_upload_bytes)
    _add_item_routes(app, host)
    _add_page_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MmsearchError)
    async def on_mmsearch_error(_request: Request, exc: MmsearchError) -> JSONResponse:
        code = status_for(exc)
        if code >= 500 and not isinstance(exc, CollectionNotReady):
            log.error("request failed: %s", exc)
        return JSONResponse({"error": _printable(str(exc))}, status_code=code)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": _printable(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=400)


def _printable(message: str) -> str:
    """A message that JSON can carry: undecodable file-name bytes shown as escapes."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line a person can act on, e.g. "q: Field required"."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "Bad request."


def _payload(
    hits: SearchResults, by: str, started: float, count: int | None, label: str | None = None
) -> dict[str, Any]:
    """The one JSON shape of a search, whatever asked for it (text, picture, item)."""
    body = {
        "query": label or (hits.query.describe() if hits.query is not None else ""),
        "by": by,
        "results": [result_dict(h) for h in hits],
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if count is not None:
        body["count"] = count
    return body


class SearchParams:
    """Every query option of the HTTP API: the same names as the CLI and `Engine.search`."""

    def __init__(
        self,
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of results.")] = 10,
        offset: Annotated[int, Query(ge=0, le=10_000, description="Skip this many results (paging).")] = 0,
        types: Annotated[list[str] | None, Query(alias="type", description="Only these file types (repeatable): image, video, audio, text.")] = None,
        group: Annotated[bool, Query(description="Merge adjacent keyframes/windows of one file into one hit.")] = True,
        not_: Annotated[list[str] | None, Query(alias="not", description="Text to move away from (repeatable).")] = None,
        like: Annotated[list[int] | None, Query(description="More like these item ids (repeatable).")] = None,
        unlike: Annotated[list[int] | None, Query(description="Less like these item ids (repeatable).")] = None,
        path: Annotated[list[str] | None, Query(description="Only paths matching these globs or folders.")] = None,
        after: Annotated[str | None, Query(description="Taken (else modified) on or after this ISO date.")] = None,
        before: Annotated[str | None, Query(description="Taken (else modified) before this ISO date.")] = None,
        min_width: Annotated[int | None, Query(ge=0)] = None,
        min_height: Annotated[int | None, Query(ge=0)] = None,
        camera: Annotated[str | None, Query(max_length=200)] = None,
        tag: Annotated[list[str] | None, Query(description="Only pictures with these zero-shot tags (repeatable: all of them).")] = None,
        min_duration: Annotated[float | None, Query(ge=0)] = None,
        max_duration: Annotated[float | None, Query(ge=0)] = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        sort: Annotated[str, Query(description="relevance, date or -date.")] = "relevance",
        cutoff: Annotated[str | None, Query(description="'auto': stop where the scores drop.")] = None,
        count: Annotated[bool, Query(description="Also count the items scoring at least min_score.")] = False,
        rerank: Annotated[list[str] | None, Query(description="Rerankers (repeatable): itm, mmr, cross-encoder, or none.")] = None,
        user: Annotated[str | None, Query(max_length=128, description="Whose feedback personalises the order (default: the server's user).")] = None,
        personal: Annotated[bool, Query(description="Personalise with the user's feedback.")] = True,
    ) -> None:
        self.__dict__.update({k2: v for k2, v in locals().items() if k2 != "self"})

    def terms(self) -> list[Term]:
        """The terms besides the main text or picture: negatives and items."""
        out = [Term("text", t, -1.0) for t in self.not_ or () if t.strip()]
        out += [Term("item", _item_id(i)) for i in self.like or ()]
        out += [Term("item", _item_id(i), -1.0) for i in self.unlike or ()]
        return out

    def filters(self) -> Filters:
        return Filters(
            types=frozenset(self.types or ()), paths=tuple(self.path or ()),
            after=_iso(self.after, "after"), before=_iso(self.before, "before"),
            min_width=self.min_width, min_height=self.min_height, camera=self.camera,
            min_duration=self.min_duration, max_duration=self.max_duration,
            tags=tuple(t[:64] for t in self.tag or ()),
        )  # fmt: skip

    def run(self, host: EngineHost, terms: list[Term]) -> tuple[SearchResults, int | None]:
        def go(engine: Engine) -> tuple[SearchResults, int | None]:
            q = engine.build_query(
                terms + self.terms(), self.k, filters=self.filters(), offset=self.offset,
                sort=self.sort, cutoff=self.cutoff, min_score=self.min_score, group=self.group,
                rerank=tuple(self.rerank) if self.rerank else None,
                user=(self.user or default_user()) if self.personal else None,
            )  # fmt: skip
            hits = engine.search(q)
            total = engine.count(q, self.min_score if self.min_score is not None else 0.0) if self.count else None
            return hits, total

        return host.call(go)


class FeedbackBody(BaseModel):
    """A judgement from the page: which result, good or bad, whose, for which search."""

    item_id: int = Field(ge=0, le=2**63 - 1)
    good: bool
    user: str | None = Field(default=None, max_length=128)
    query: str | None = Field(default=None, max_length=2000)


def _item_id(value: int) -> int:
    if not 0 <= value < 2**63:
        raise QueryError(f"No item {value} in this collection.")
    return value


def _iso(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise QueryError(f"{name} takes an ISO date like 2024-06-01, not {value!r}.") from None


def _add_search_routes(app: FastAPI, host: EngineHost, max_upload_bytes: int) -> None:
    @app.get("/api/search")
    def search_text(
        params: Annotated[SearchParams, Depends()],
        q: Annotated[str | None, Query(description='What to look for, e.g. "a red car".')] = None,
    ) -> dict[str, Any]:
        """Search with a sentence, items (`like`), or both; every filter and option applies."""
        started = time.perf_counter()
        terms = [Term("text", q)] if q is not None else []
        hits, total = params.run(host, terms)
        by = "text" if q is not None else "item"
        return _payload(hits, by, started, total)

    @app.post("/api/search/image")
    def search_image(
        file: Annotated[UploadFile, File(description="The query picture (JPEG, PNG, WebP, ...).")],
        params: Annotated[SearchParams, Depends()],
        q: Annotated[str | None, Query(description="Text to add to the picture.")] = None,
    ) -> dict[str, Any]:
        """Search with a picture (plus any text, items and filters): its nearest images, keyframes and passages."""
        started = time.perf_counter()
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"The upload is larger than {max_upload_bytes // 2**20} MB.")
        image = media.decode_upload(data, file.filename)
        terms = [Term("image", image)] + ([Term("text", q)] if q else [])
        hits, total = params.run(host, terms)
        return _payload(hits, "image", started, total, file.filename or "upload")

    @app.post("/api/feedback")
    def feedback(body: FeedbackBody) -> dict[str, Any]:
        """Record 👍 (good) or 👎 for a result, for one user (default: the server's user)."""
        user = body.user or default_user()
        event = host.call(lambda e: e.feedback(_item_id(body.item_id), body.good, user=user, query=body.query))
        count = host.call(lambda e: e.collection.catalog.feedback_count(user))
        return {"user": user, "item_id": body.item_id, "good": body.good, "judgements": count, "path": event.path}

    @app.get("/api/profile")
    def profile(user: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
        """What was learned for a user: their judgements and the model's kind and weights."""
        return host.call(lambda e: e.profile(user or default_user()))

    @app.delete("/api/profile")
    def reset_profile(user: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
        """Forget one user's feedback."""
        removed = host.call(lambda e: e.reset_profile(user or default_user()))
        return {"user": user or default_user(), "removed": removed}

    @app.get("/api/tags")
    def tags() -> dict[str, Any]:
        """Zero-shot tags with how many pictures carry each, most common first."""
        counts = host.call(lambda e: e.tags())
        return {"tags": [{"tag": t, "count": n} for t, n in counts]}

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        """Model, folders, counts by kind, index type and disk use (503 until there is a collection)."""
        st = host.call(lambda e: e.status())
        if st.model is None:
            raise CollectionNotReady(f"The collection at {st.home} is empty: index a folder first.")
        return st.to_dict()


MAX_ITEM_ID = 2**63 - 1  # ids are SQLite integers; a larger one is a bad request, not a crash
ItemId = Annotated[
    int, PathParam(ge=0, le=MAX_ITEM_ID, description="An item id from a search result.")
]


def _add_item_routes(app: FastAPI, host: EngineHost) -> None:
    def lookup(item_id: int) -> Any:
        found = host.call(lambda e: _item(e, item_id))
        if found is None:
            raise HTTPException(
                404, f"No item {item_id} in this collection (it may have been re-indexed)."
            )
        return found

    @app.get("/api/items/{item_id}")
    def item(item_id: ItemId) -> dict[str, Any]:
        """One item as a result without a score: path, kinds, time span, date, URLs (for "more like" chips)."""
        record, _file = lookup(item_id)
        body: dict[str, Any] = {
            "item_id": record.id, "path": record.path, "kind": record.kind,
            "asset_kind": record.asset_kind, "date": record.asset.date_s,
            "file_url": f"/api/items/{record.id}/file",
        }  # fmt: skip
        if record.start_s is not None:
            body.update(start=record.start_s, end=record.end_s)
        if record.kind in THUMBNAIL_KINDS:
            body["thumbnail_url"] = f"/api/items/{record.id}/thumbnail"
        return body

    @app.get("/api/items/{item_id}/thumbnail", response_class=Response)
    def thumbnail(item_id: ItemId) -> Response:
        """The item's picture as a small JPEG: stored for keyframes, rendered for photos."""
        record, file = lookup(item_id)
        data = record.thumbnail
        if data is None and record.kind in ("image", "ocr"):  # the words' picture itself
            try:
                data = media.render_thumbnail(file)
            except media.FileRefused as exc:
                log.info("%s", exc)
                raise HTTPException(exc.status, str(exc)) from exc
            except media.ThumbnailError as exc:
                log.info("%s", exc)
                raise HTTPException(404, str(exc)) from exc
        if data is None:
            raise HTTPException(404, f"Item {item_id} ({record.kind}) has no picture.")
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": THUMBNAIL_CACHE_CONTROL}
        )

    @app.get("/api/items/{item_id}/file", response_class=FileResponse)
    def original(item_id: ItemId) -> FileResponse:
        """The item's original file, found by id (never by a client-given path); Range requests work.

        Served only while it is the regular file that was indexed, inside a registered folder.
        """
        _, file = lookup(item_id)
        try:
            opened = media.open_indexed(file)
        except media.FileRefused as exc:
            log.info("%s", exc)
            raise HTTPException(exc.status, str(exc)) from exc
        path = Path(file.path)
        kind = media.media_type(path)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        if kind != "application/pdf":
            headers["Content-Security-Policy"] = FILE_CSP
        return OpenedFileResponse(
            opened,
            media_type=kind,
            filename=path.name,
            content_disposition_type="inline",
            headers=headers,
        )


class OpenedFileResponse(FileResponse):
    """A FileResponse that sends the file already opened and checked, not whatever its path is now.

    Starlette opens by path, so it is given the descriptor's own path (/proc/self/fd/N), which
    reopens the checked file even if its name was swapped since; the descriptor is closed when the
    response ends, however it ends.
    """

    def __init__(self, opened: media.OpenedFile, **kwargs: Any) -> None:
        path = media.fd_url_path(opened.fd) or opened.real_path
        super().__init__(path, stat_result=opened.stat, **kwargs)
        self._fd = opened.fd

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The pathsend extension would hand the server a /proc path to open in its own time.
        scope = {**scope, "extensions": dict(scope.get("extensions") or {})}
        scope["extensions"].pop("http.response.pathsend", None)
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self._fd)


def _add_page_routes(app: FastAPI) -> None:
    page_headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

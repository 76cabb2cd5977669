"""Decoding files into encoder-ready items, in worker processes with a bounded look-ahead.

Everything but the forward pass happens here: the source reader, the content hash, and for
pictures the letterbox resize to the encoder's input (`ImagePreprocess.to_uint8`), so only
compact uint8 arrays cross the process boundary and the main process only runs the model.

Workers are plain processes fed through one pipe each, not a `ProcessPoolExecutor`: the parent
always knows which file each worker is on, so when a decoder takes its process down (decord can
segfault on a corrupt video) exactly that file is reported as "decoder crashed", the files
queued behind it go to other workers, and a fresh worker takes its place. Workers start with
"forkserver" (or "spawn"), never "fork", so they inherit no torch threads or locks. This module
imports no torch and no database code, so workers start quickly.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing import connection
from pathlib import Path
from typing import Any

import numpy as np

from indexer.hashing import content_hash
from indexer.sources import load_reader
from indexer.sources.audio import AudioOptions
from indexer.sources.base import (
    ASSET_AUDIO,
    ASSET_IMAGE,
    ASSET_TEXT,
    ASSET_VIDEO,
    IMAGE,
    KEYFRAME,
    TEXT,
    TRANSCRIPT,
    SourceItem,
    SourceResult,
)
from indexer.sources.image import DEFAULT_LIMITS, ImageLimits
from indexer.sources.ocr import OCR, OcrOptions, engine_name, keyframe_words, ocr_items
from indexer.sources.text import TextOptions
from indexer.sources.video import VideoOptions
from mmsearch.errors import DecodeError, MissingDependencyError, MmsearchError
from mmsearch.models.preprocess import ImagePreprocess
from mmsearch.paths import is_utf8, key_path, path_key

log = logging.getLogger(__name__)

PICTURE_KINDS = (IMAGE, KEYFRAME)
TEXT_KINDS = (TRANSCRIPT, TEXT, OCR)
PREFETCH = 2  # files handed to one worker at a time: one decoding, one waiting, so it never idles
MAX_LOG_RECORDS = 20  # log records a worker sends back per file (a broken file must not flood)
MAX_STARTUP_FAILURES = 3  # workers dying before their first file: give up, something is broken
TICK_S = 0.5  # how often an idle consumer is woken, so it can commit what it holds on time


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs besides the file; pickled once per worker process."""

    preprocess: ImagePreprocess  # the encoder's own letterbox, run in the worker
    image_size: int  # the encoder's input side: JPEGs are draft-decoded near this size
    image_limits: ImageLimits = DEFAULT_LIMITS  # pixel and byte bounds for pictures
    video: VideoOptions = field(default_factory=VideoOptions)  # keyframes and video sound
    audio: AudioOptions = field(default_factory=AudioOptions)  # recordings' transcription
    text: TextOptions = field(default_factory=TextOptions)  # passages of documents
    ocr: OcrOptions = field(default_factory=OcrOptions)  # words inside pictures
    log_level: int = logging.WARNING  # records below this are not sent back from workers
    niceness: int = 0  # added to each worker's nice value (`DECODER_NICENESS` beside a CPU encoder)


@dataclass(frozen=True)
class DecodeJob:
    """One file to decode; the reader travels with it, so readers registered at run time work."""

    path: str  # absolute path, the catalog key
    asset_kind: str  # ASSET_IMAGE, ASSET_VIDEO, ASSET_AUDIO or ASSET_TEXT
    reader: str  # "module:function" from the source registry
    content_hash: str | None = None  # known when the scan already hashed the file

    @property
    def extension(self) -> str:
        return Path(self.path).suffix.lower()


@dataclass
class DecodedItem:
    """An item ready for the encoder: letterboxed pixels or a passage of text."""

    kind: str  # IMAGE, KEYFRAME, TRANSCRIPT or TEXT
    pixels: np.ndarray | None = None  # (H, W, 3) uint8 at the encoder's input size
    text: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    thumbnail: bytes | None = None
    vector: np.ndarray | None = None  # set when a Ray actor encoded it (then pixels are dropped)
    patches: np.ndarray | None = None  # the picture's patch features, with `vector`


@dataclass
class Decoded:
    """A file read successfully: its hash, catalog metadata and items."""

    job: DecodeJob
    content_hash: str
    meta: dict[str, Any]
    items: list[DecodedItem]
    logs: list[tuple[str, int, str]] = field(default_factory=list)  # (logger, level, message)
    seconds: float = 0.0  # time the worker spent reading, hashing and preprocessing it
    encode_seconds: float = 0.0  # its share of a Ray actor's forward passes (encoded there)
    on_device: bool = False  # decoded in a batch on the encoder's device (`indexer.jpeg_batch`)


@dataclass
class Failed:
    """A file that cannot be indexed now, with a reason for the user."""

    job: DecodeJob
    reason: str
    missing_dependency: bool = False  # the reason names a package to install
    logs: list[tuple[str, int, str]] = field(default_factory=list)


Outcome = Decoded | Failed


# ---- decoding one file (in a worker, or inline) ----------------------------------------------


def decode(job: DecodeJob, config: WorkerConfig) -> Outcome:
    """Read, hash and preprocess one file; any failure becomes a `Failed`, never an exception."""
    started = time.perf_counter()
    outcome = _decode(job, config)
    if isinstance(outcome, Decoded):
        outcome.seconds = time.perf_counter() - started
    return outcome


def _decode(job: DecodeJob, config: WorkerConfig) -> Outcome:
    path = key_path(job.path)  # the catalog key, with escaped bytes of non-UTF-8 names restored
    try:
        reader = load_reader(job.reader)
        args, kwargs = _reader_arguments(job.asset_kind, config)
        result = reader(path, *args, **kwargs)
        items = [_prepare(item, config.preprocess, path) for item in result.items]
        if not items:
            raise DecodeError(f"{path}: nothing to index in it")
        if config.ocr.enabled and job.asset_kind in (ASSET_IMAGE, ASSET_VIDEO):
            items += _read_words(path, job.asset_kind, result, config)
        digest = job.content_hash or content_hash(path)
    except DecodeError as exc:
        return Failed(job, short_reason(exc, path))
    except MissingDependencyError as exc:
        return Failed(job, str(exc), missing_dependency=True)
    except OSError as exc:
        return Failed(job, f"cannot read: {exc.strerror or exc}")
    except MemoryError:
        return Failed(job, "out of memory while decoding")
    except Exception as exc:  # an unforeseen library error costs this file, not the run
        log.warning("unexpected error decoding %s", path, exc_info=True)
        return Failed(job, short_reason(f"unexpected error: {type(exc).__name__}: {exc}", path))
    if result.asset_kind != job.asset_kind:  # a sound-only .mp4 is a recording, not a video
        job = replace(job, asset_kind=result.asset_kind)
    return Decoded(job, digest, dict(result.meta), items)


def _read_words(
    path: Path, asset_kind: str, result: SourceResult, config: WorkerConfig
) -> list[DecodedItem]:
    """OCR of a picture (or a video's keyframes) that decoded: its failure costs the words,
    never the picture."""
    meta = result.meta
    started = time.perf_counter()
    try:
        if asset_kind == ASSET_VIDEO:
            spans = [(i.start_s, i.end_s) for i in result.items if i.kind == KEYFRAME]
            words = keyframe_words(path, spans, config.ocr)
        else:
            words = ocr_items(path, config.ocr, config.image_limits)
    except (DecodeError, OSError) as exc:
        log.info("no words read from %s: %s", path, exc)
        return []
    meta["ocr_engine"] = engine_name()
    meta["ocr_seconds"] = time.perf_counter() - started
    return [_prepare(item, config.preprocess, path) for item in words]


def _reader_arguments(asset_kind: str, config: WorkerConfig) -> tuple[tuple, dict[str, Any]]:
    """Image readers take the target size and limits; the others take their kind's options."""
    if asset_kind == ASSET_IMAGE:
        return (), {"target_size": config.image_size, "limits": config.image_limits}
    options = {ASSET_VIDEO: config.video, ASSET_AUDIO: config.audio, ASSET_TEXT: config.text}
    return (options[asset_kind],), {}


def _prepare(item: SourceItem, preprocess: ImagePreprocess, path: Path) -> DecodedItem:
    if item.kind in PICTURE_KINDS:
        if item.image is None:
            raise DecodeError(f"{path}: a {item.kind} item without a picture")
        pixels = preprocess.to_uint8(item.image)
    elif item.kind in TEXT_KINDS:
        if item.text is None:
            raise DecodeError(f"{path}: a {item.kind} item without text")
        pixels = None
    else:
        raise DecodeError(f"{path}: the reader made an item of unknown kind {item.kind!r}")
    return DecodedItem(item.kind, pixels, item.text, item.start_s, item.end_s, item.thumbnail)


def short_reason(exc: BaseException | str, path: Path | str) -> str:
    """A DecodeError's message without the leading "<path>: " (the path is reported beside it).

    Undecodable bytes of a file name left in the message are escaped as in catalog keys.
    """
    text = str(exc)
    prefix = f"{path}: "
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return text if is_utf8(text) else path_key(text)


def replay_logs(logs: Iterable[tuple[str, int, str]]) -> None:
    """Log, in this process, what a worker logged while decoding a file."""
    for name, level, message in logs:
        logging.getLogger(name).log(level, "%s", message)


# ---- decoders: inline and in worker processes ------------------------------------------------


class InlineDecoder:
    """Decodes in the calling thread: no start-up cost, but a decoder crash ends the run."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    def __enter__(self) -> InlineDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, jobs: Iterable[DecodeJob | Failed]) -> Iterator[Outcome | None]:
        for job in jobs:
            yield job if isinstance(job, Failed) else decode(job, self.config)

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Nothing decodes while the caller encodes anyway."""
        return contextlib.nullcontext()


def start_context() -> multiprocessing.context.BaseContext:
    """Start workers by "forkserver" where there is one (fast, inherits nothing), else "spawn"."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: connection.Connection
    inflight: deque[DecodeJob] = field(default_factory=deque)  # in the order the worker runs them
    ready: bool = False  # it said it started; a death before that is not the file's fault
    alive: bool = True


class Done:
    """Marks the end of the outcome stream a collector thread hands over."""


def handed_over(get: Callable[[float], Any]) -> Iterator[Any]:
    """What a collector thread hands over through `get(timeout)` until `Done`: None every
    `TICK_S` while waiting (so the consumer can commit on time), a handed exception raised."""
    while True:
        try:
            message = get(TICK_S)
        except queue.Empty:
            yield None
            continue
        if isinstance(message, Done):
            return
        if isinstance(message, BaseException):
            raise message
        yield message


READY = "ready"  # a worker's first message: it started and is taking jobs


class Outbox:
    """Outcomes waiting for the consumer, bounded by the items they hold: a video's keyframes
    each count, so a few long videos cannot fill memory the way a count of files would let them.
    One outcome is always let in, however large."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._held: deque[tuple[Any, int]] = deque()
        self._weight = 0
        self._changed = threading.Condition()

    def put(self, item: Any, timeout: float) -> bool:
        """Add `item`, waiting up to `timeout` for room; False if there was none."""
        weight = _weight(item)
        with self._changed:
            if not self._changed.wait_for(lambda: self._fits(weight), timeout):
                return False
            self._held.append((item, weight))
            self._weight += weight
            self._changed.notify_all()
            return True

    def get(self, timeout: float) -> Any:
        """The oldest outcome; `queue.Empty` after `timeout` seconds without one."""
        with self._changed:
            if not self._changed.wait_for(lambda: bool(self._held), timeout):
                raise queue.Empty
            item, weight = self._held.popleft()
            self._weight -= weight
            self._changed.notify_all()
            return item

    def _fits(self, weight: int) -> bool:
        return not self._held or self._weight + weight <= self.limit


def _weight(item: Any) -> int:
    return max(1, len(item.items)) if isinstance(item, Decoded) else 1


class ProcessDecoder:
    """Decodes in `workers` processes; at most about `max_ahead` items (pictures, passages) are
    decoded ahead of use.

    `start` hands the jobs to a background thread that dispatches them and collects results, so
    workers keep decoding while the consumer loads or runs the model, unless it asks them to wait
    (`paused`); `outcomes` yields them as files finish (any order), and None every `TICK_S` while
    waiting, so the consumer can commit on time. `run` does both.
    """

    def __init__(
        self,
        config: WorkerConfig,
        workers: int,
        max_ahead: int,
        context: multiprocessing.context.BaseContext | None = None,
    ) -> None:
        self.config = config
        self.size = max(1, workers)
        self.ctx = context or start_context()
        # queued + in flight <= max_ahead: the workers' share is PREFETCH files each
        self._out = Outbox(max_ahead - PREFETCH * self.size)
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._wake_reader, self._wake_writer = self.ctx.Pipe(duplex=False)  # ends a pause's wait
        os.set_blocking(self._wake_writer.fileno(), False)  # a full pipe already holds a wake-up
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._started = 0
        self._startup_failures = 0
        self.crashes = 0  # files whose decoder took its worker down

    def __enter__(self) -> ProcessDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: Iterable[DecodeJob | Failed]) -> Iterator[Outcome | None]:
        self.start(jobs)
        return self.outcomes()

    def start(self, jobs: Iterable[DecodeJob | Failed]) -> None:
        """Begin decoding `jobs` in the background, once the previous jobs (if any) are done:
        the workers stay up from one run to the next (a Ray actor decodes batch after batch)."""
        if self._thread is not None and self._thread.is_alive():
            raise MmsearchError("this decoder is still decoding its previous jobs")
        self._thread = threading.Thread(
            target=self._collect, args=(iter(jobs),), name="mmsearch-decode-collector", daemon=True
        )
        self._thread.start()

    def outcomes(self) -> Iterator[Outcome | None]:
        """What `start`ed decoding gives, as files finish; None while waiting."""
        return handed_over(self._out.get)

    def prestart(self) -> None:
        """Start every worker process now, before there are jobs (they import while the caller
        loads a model), instead of as the first jobs need them. Call before `start`."""
        if self._thread is not None:
            raise MmsearchError("prestart() comes before start()")
        while len(self._workers) < self.size:
            self._start_worker()

    def grow_to(self, workers: int) -> None:
        """Use up to `workers` processes from now on (they start as jobs need them)."""
        self.size = max(self.size, workers)
        self._wake()

    def lower_priority(self, niceness: int) -> None:
        """Run the workers, and any started later, `niceness` steps nicer than they are now."""
        self.config = replace(self.config, niceness=self.config.niceness + niceness)
        for w in self._workers:
            if w.alive and w.process.pid is not None:
                _renice(w.process.pid, niceness)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hand no new files to the workers for a while (each finishes the few it holds).

        A CPU encoder's matrix products run on every core and wait for their slowest thread, so a
        decoder that takes one of those cores stalls the whole product; decoding in the encoder's
        pauses instead measured faster on 2 cores (the peers harness, README's Benchmarks)."""
        self._pause.set()
        try:
            yield
        finally:
            self._pause.clear()
            self._wake()

    def _wake(self) -> None:
        """Have the collector look at the workers now, not at its next tick."""
        try:
            self._wake_writer.send_bytes(b"")
        except BlockingIOError:  # the pipe is full of wake-ups it has not read yet
            pass

    def close(self) -> None:
        """Stop the collector and the workers (they also exit on their own if we die)."""
        self._stop.set()
        self._pause.clear()
        if self._thread is not None:
            self._thread.join()
        for w in self._workers:
            self._stop_worker(w)
        self._workers.clear()
        self._wake_reader.close()
        self._wake_writer.close()

    # ---- the collector thread ----------------------------------------------------------------

    def _collect(self, jobs: Iterator[DecodeJob | Failed]) -> None:
        try:
            self._dispatch_loop(jobs)
            self._put(Done())
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _dispatch_loop(self, jobs: Iterator[DecodeJob | Failed]) -> None:
        retry: deque[DecodeJob] = deque()  # queued behind a crash: decoded first
        held: DecodeJob | Failed | None = None  # the next job, waiting for a free worker
        exhausted = False
        while not self._stop.is_set():
            while True:
                if held is None:
                    held = retry.popleft() if retry else None
                    if held is None and not exhausted:
                        held = next(jobs, None)
                        exhausted = held is None
                    if held is None:
                        break
                if isinstance(held, Failed):  # failed before decoding (e.g. missing package)
                    self._put(held)
                    held = None
                    continue
                worker = self._free_worker()
                if worker is None:
                    break
                self._send(worker, held, retry)
                held = None
            busy = any(w.inflight for w in self._workers)
            if exhausted and held is None and not retry and not busy:
                return
            self._wait(retry)

    def _send(self, worker: _Worker, job: DecodeJob, retry: deque[DecodeJob]) -> None:
        worker.inflight.append(job)
        try:
            worker.conn.send(job)
        except OSError:  # it died just now; the job never reached it
            worker.inflight.pop()
            retry.appendleft(job)
            self._reap(worker, retry)
            self._workers = [w for w in self._workers if w.alive]

    def _free_worker(self) -> _Worker | None:
        """The least busy live worker with room, starting one if the pool is short; none while
        paused."""
        if self._pause.is_set():
            return None
        live = [w for w in self._workers if w.alive]
        if len(live) < self.size:
            return self._start_worker()
        worker = min(live, key=lambda w: len(w.inflight))
        return worker if len(worker.inflight) < PREFETCH else None

    def _start_worker(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        self._started += 1
        process = self.ctx.Process(
            target=worker_main,
            args=(child, self.config),
            name=f"mmsearch-decode-{self._started}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker

    def _wait(self, retry: deque[DecodeJob]) -> None:
        live = [w for w in self._workers if w.alive]
        by_handle: dict[Any, _Worker] = {}
        for w in live:
            by_handle[w.conn] = w
            by_handle[w.process.sentinel] = w
        for handle in connection.wait([self._wake_reader, *by_handle], timeout=TICK_S):
            if handle is self._wake_reader:
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
                continue
            worker = by_handle[handle]
            if not worker.alive:
                continue
            if handle is worker.conn:
                self._receive(worker, retry)
            else:
                self._reap(worker, retry)
        self._workers = [w for w in self._workers if w.alive]

    def _receive(self, worker: _Worker, retry: deque[DecodeJob]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._reap(worker, retry)
            return
        if message == READY:
            worker.ready = True
        else:
            self._deliver(worker, message)

    def _deliver(self, worker: _Worker, outcome: Outcome) -> None:
        job = worker.inflight.popleft()
        if outcome.job.path != job.path:  # a worker runs its files in order; anything else is a bug
            raise MmsearchError(f"decode worker answered for {outcome.job.path}, not {job.path}")
        self._startup_failures = 0
        self._put(outcome)

    def _reap(self, worker: _Worker, retry: deque[DecodeJob]) -> None:
        """A worker died: keep what it sent, blame the file it was on, requeue the rest."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == READY:
                    worker.ready = True
                else:
                    self._deliver(worker, message)
        except (EOFError, OSError):
            pass
        worker.alive = False
        worker.process.join(timeout=5)
        worker.conn.close()
        how = describe_exit(worker.process.exitcode)
        if worker.ready and worker.inflight:
            culprit = worker.inflight.popleft()
            self.crashes += 1
            log.warning("decoder crashed on %s (%s); starting a new worker", culprit.path, how)
            self._put(Failed(culprit, f"decoder crashed ({how})"))
            retry.extendleft(reversed(worker.inflight))
            worker.inflight.clear()
            return
        retry.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
        if worker.ready:  # died between files (out of memory?): nobody to blame
            log.warning("a decode worker exited while idle (%s); starting a new one", how)
            return
        self._startup_failures += 1
        log.warning("a decode worker exited while starting (%s)", how)
        if self._startup_failures >= MAX_STARTUP_FAILURES:
            raise MmsearchError(
                f"Decode worker processes keep exiting while starting ({how}). Worker processes "
                "import the main module: a script that indexes must do so under "
                '`if __name__ == "__main__":`. Otherwise run with -v to see why, or decode '
                "in-process (IndexOptions(in_process=True))."
            )

    def _put(self, item: Any) -> None:
        """Hand an outcome to the consumer, waiting while it is `max_ahead` behind."""
        while not self._stop.is_set():
            if self._out.put(item, timeout=TICK_S):
                return

    def _stop_worker(self, worker: _Worker) -> None:
        if worker.alive:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        worker.process.join(timeout=2)
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join(timeout=2)
        worker.conn.close()
        worker.alive = False


def describe_exit(code: int | None) -> str:
    """A process exit code as words: "killed by SIGSEGV", "exit code 3"."""
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---- the worker process ----------------------------------------------------------------------


class _Capture(logging.Handler):
    """Collects a worker's log records so the parent can replay them with its own handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < MAX_LOG_RECORDS:
            self.records.append((record.name, record.levelno, self.format(record)))

    def take(self) -> list[tuple[str, int, str]]:
        records, self.records = self.records, []
        return records


def _renice(pid: int, niceness: int) -> None:
    """`niceness` steps nicer for another of our processes (a worker already running)."""
    if niceness > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + niceness)
        except OSError:  # gone, or not allowed: it keeps its priority
            pass


def _lower_priority(niceness: int) -> None:
    """Yield the cores to the encoder: a worker that runs whenever the encoder's threads wait,
    instead of preempting one of them (a multi-threaded matrix product waits for its slowest
    thread, so one preempted thread stalls them all)."""
    if niceness > 0 and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError:  # not allowed here: run at normal priority
            pass


def worker_main(conn: connection.Connection, config: WorkerConfig) -> None:
    """Decode jobs from the pipe in order until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _lower_priority(config.niceness)
    capture = _Capture()
    root = logging.getLogger()
    root.handlers[:] = [capture]
    root.setLevel(config.log_level)
    logging.captureWarnings(True)
    try:
        conn.send(READY)
    except (EOFError, OSError):
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if job is None:
            return
        outcome = decode(job, config)
        outcome.logs = capture.take()
        try:
            conn.send(outcome)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable value in a reader's metadata
            conn.send(Failed(job, f"unexpected error: cannot send the result ({exc})"))

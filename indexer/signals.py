"""SIGTERM stops an index run the way Ctrl-C does: committed work is kept, workers are stopped.

A service manager, a container runtime and `timeout` all send SIGTERM; Python's default is to
die at once, without closing the decode workers. Inside `terminate_as_interrupt` the signal
raises `Terminated` (a KeyboardInterrupt) in the main thread instead, so the same unwinding runs:
the open transaction rolls back, the decoder pool closes, and the CLI exits with 143 (128 + 15).
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """The run was stopped by SIGTERM; `exit_code` is what a shell reports for it."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the duration, where nobody else has claimed it.

    Outside the main thread (a server indexing in a worker thread), or when the program installed
    its own SIGTERM handler or ignores the signal, nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stops_on_sigterm(func: F) -> F:
    """Decorator form of `terminate_as_interrupt`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with terminate_as_interrupt():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = ["Terminated", "stops_on_sigterm", "terminate_as_interrupt"]

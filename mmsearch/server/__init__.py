"""The HTTP API and its web page: `create_app()` for ASGI servers and tests, `serve()` for the CLI.

    from mmsearch.server import create_app
    app = create_app(home="~/my-index")          # uvicorn, hypercorn, TestClient ...

FastAPI and uvicorn are optional (`pip install 'mmsearch[server]'`); they are imported here only
when an app is built, so importing mmsearch never needs them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mmsearch.errors import ConfigError, require

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mmsearch.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def create_app(
    home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    *,
    device: str = "auto",
    engine_factory: Callable[[], Engine] | None = None,
    max_upload_bytes: int | None = None,
    warm: bool = False,
    token: str | None = None,
    allow_hosts: Sequence[str] = (),
    bind_host: str | None = None,
    engine_options: dict[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI app serving one collection home (or the engine `engine_factory` makes).

    It answers requests whose Host is a loopback name, `bind_host` or one of `allow_hosts`
    (tests: `TestClient(app, base_url="http://127.0.0.1")`); with a `token`, the API needs it.
    """
    require("fastapi", "The HTTP API", "server")
    require("python_multipart", "Searching by an uploaded picture", "server")
    from mmsearch.server import app as server_app
    from mmsearch.server import security

    if engine_factory is None:
        from mmsearch.engine import Engine

        def engine_factory() -> Engine:
            return Engine(home=home, model=model, device=device, **(engine_options or {}))

    limit = server_app.MAX_UPLOAD_BYTES if max_upload_bytes is None else max_upload_bytes
    if token is not None:
        security.check_token(token)
    policy = security.policy_for(bind_host, allow_hosts, token)
    return server_app.create_app(engine_factory, max_upload_bytes=limit, warm=warm, policy=policy)


def serve(
    home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str = "auto",
    announce: Callable[[str], None] | None = None,
    token: str | None = None,
    allow_hosts: Sequence[str] = (),
    engine_options: dict[str, Any] | None = None,
) -> None:
    """Serve the API and page until interrupted; binds loopback unless told otherwise.

    The socket is bound here, not by uvicorn, so a busy port is a ConfigError with a way out
    (and `port=0` picks a free one, whose URL `announce` receives). Beyond loopback a token is
    required: `token`, else $MMSEARCH_TOKEN, else a generated one, which the announced URL carries.
    """
    from mmsearch.server import security

    uvicorn = require("uvicorn", "The HTTP server", "server")
    required = security.resolve_token(token, host)
    app = create_app(
        home,
        model,
        device=device,
        warm=True,
        token=required,
        allow_hosts=allow_hosts,
        bind_host=host,
        engine_options=engine_options,
    )
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    if not security.is_loopback(host):
        log.warning(
            "listening on %s: anyone who can reach this machine and has the token can search "
            "and download the indexed files; use --host 127.0.0.1 to keep it private.",
            host,
        )
    if announce is not None:
        generated = required is not None and not (token or os.environ.get(security.TOKEN_ENV))
        announce(f"{url}?token={required}" if generated else url)
    # log_config=None: uvicorn logs through the caller's logging (the CLI's rich handler, -v levels).
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
            f"Pick another --port (or --port 0 for any free one)."
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve"]

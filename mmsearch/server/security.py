"""Who may talk to the server: the Host allow-list, same-origin writes, and the access token.

One ASGI middleware, `SecurityGate`, applies a `SecurityPolicy` to every request before the app
sees it. The threat model and the promises are in docs/SECURITY.md; in short:

- Host allow-list: a web page on another name that resolves to this machine (DNS rebinding)
  is refused, because the browser sends that name in `Host`.
- Writes (POST ...) from a browser must come from this server's own page: `Origin` and
  `Sec-Fetch-Site` say where a request came from, and a cross-site API read is refused too.
- A token is required when the server listens beyond loopback: `Authorization: Bearer <token>`,
  a cookie, or `?token=<token>` once (the page URL printed at start), which sets the cookie.

Kept free of FastAPI (plain ASGI) so it can be reasoned about and tested on its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from mmsearch.errors import ConfigError

TOKEN_ENV = "MMSEARCH_TOKEN"
COOKIE_NAME = "mmsearch_token"
MIN_TOKEN_LENGTH = 16
_TOKEN_RE = re.compile(rf"[A-Za-z0-9._~-]{{{MIN_TOKEN_LENGTH},}}")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The page and its assets hold nothing private, so a person without the cookie still sees a page
# that says what to do; everything else (the API, the OpenAPI docs) needs the token.
PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


@dataclass(frozen=True)
class SecurityPolicy:
    """What the gate lets through."""

    allowed_hosts: frozenset[str]  # names the Host header may carry (lower case, no port)
    token: str | None = None  # required on every non-public request when set
    any_ip_host: bool = False  # any IP literal passes too (wildcard bind; cannot be rebound)


def is_loopback(host: str) -> bool:
    """Whether a bind address keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(given: str | None, bind_host: str) -> str | None:
    """The token to require: given > $MMSEARCH_TOKEN > a fresh one when listening beyond loopback."""
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is not None:
        return check_token(token)
    return None if is_loopback(bind_host) else secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """A token as given, if it is long enough to resist guessing and safe in a cookie and a URL."""
    if not _TOKEN_RE.fullmatch(token):
        raise ConfigError(
            f"The access token (--token or ${TOKEN_ENV}) must be at least {MIN_TOKEN_LENGTH} "
            "letters, digits or '-', '_', '.', '~'; leave it out to have one generated."
        )
    return token


def policy_for(
    bind_host: str | None = None, allow_hosts: Iterable[str] = (), token: str | None = None
) -> SecurityPolicy:
    """The policy for a server bound to `bind_host` (None: an app not bound by us, loopback names only)."""
    names = set(LOOPBACK_NAMES) | {_normalise(h) for h in allow_hosts}
    wildcard = bind_host is not None and bind_host.strip("[]") in WILDCARD_HOSTS
    if wildcard:
        names |= {_normalise(socket.gethostname()), _normalise(socket.getfqdn())}
    elif bind_host is not None:
        names.add(_normalise(bind_host))
    return SecurityPolicy(frozenset(names), token, any_ip_host=wildcard)


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case: '[::1]:80' -> '::1'."""
    header = header.strip()
    if header.startswith("["):
        return _normalise(header[1 : header.find("]")] if "]" in header else header)
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return _normalise(header)


def _normalise(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def host_allowed(policy: SecurityPolicy, header: str | None) -> bool:
    if not header:
        return False
    name = host_name(header)
    if name in policy.allowed_hosts:
        return True
    if policy.any_ip_host:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True
    return False


def cross_origin(method: str, path: str, headers: dict[str, str]) -> str | None:
    """Why a browser request from another site is refused (None when it may pass).

    Writes must be same-origin. Reads of the API may come from anywhere but another site, so a
    foreign page cannot even probe item ids with <img> tags. Requests without these headers
    (curl, scripts) are not browsers acting for someone else, and pass.
    """
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if method not in SAFE_METHODS:
        if site is not None and site not in ("same-origin", "none"):
            return f"A {site} {method} request is refused: use the page this server serves."
        if origin is not None and not _same_origin(origin, headers.get("host", "")):
            return f"A {method} request from {origin} is refused: use the page this server serves."
        return None
    if path.startswith("/api/") and site == "cross-site":
        return "Requests from other sites are refused: use the page this server serves."
    return None


def _same_origin(origin: str, host: str) -> bool:
    if origin == "null":
        return False
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host.strip().lower()


def token_given(scope: Scope, headers: dict[str, str]) -> str | None:
    """The token a request carries: Bearer header, else ?token=, else the cookie."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    query = _query_token(scope)
    if query is not None:
        return query
    if "cookie" in headers:
        morsel = SimpleCookie(headers["cookie"]).get(COOKIE_NAME)
        if morsel is not None:
            return morsel.value
    return None


def _query_token(scope: Scope) -> str | None:
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if key == "token":
            return value
    return None


def token_matches(policy: SecurityPolicy, given: str | None) -> bool:
    if policy.token is None:
        return True
    return given is not None and secrets.compare_digest(given.encode(), policy.token.encode())


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class SecurityGate:
    """ASGI middleware: Host allow-list, then same-origin writes, then the token."""

    def __init__(self, app: ASGIApp, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app has no websocket routes
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message, extra = refusal
            await _send_json(send, status, message, extra)
            return
        if self._is_login(scope, headers):
            await _send_login_redirect(scope, send, self.policy.token or "")
            return
        await self.app(scope, receive, send)

    def _refusal(
        self, scope: Scope, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = headers.get("host")
        if not host_allowed(self.policy, host):
            return 400, _host_message(host), []
        why = cross_origin(scope.get("method", "GET"), scope["path"], headers)
        if why is not None:
            return 403, why, []
        if is_public(scope["path"]) or token_matches(self.policy, token_given(scope, headers)):
            return None
        return 401, TOKEN_MESSAGE, [(b"www-authenticate", b'Bearer realm="mmsearch"')]

    def _is_login(self, scope: Scope, headers: dict[str, str]) -> bool:
        """A page visit with ?token=: answered by setting the cookie and dropping the token from the URL."""
        return (
            self.policy.token is not None
            and scope["type"] == "http"
            and scope.get("method") == "GET"
            and not scope["path"].startswith("/api/")
            and _query_token(scope) is not None
            and token_matches(self.policy, _query_token(scope))
        )


TOKEN_MESSAGE = (
    "This server needs its access token: open the URL `mmsearch serve` printed (it ends in "
    "?token=...), or send 'Authorization: Bearer <token>'."
)


def _host_message(host: str | None) -> str:
    if not host:
        return "The request has no Host header."
    name = host_name(host)
    return (
        f"This server does not answer to the name {name!r}: open it by the address it printed, "
        f"or start it with --allow-host {name}."
    )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def _send_json(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


async def _send_login_redirect(scope: Scope, send: Send, token: str) -> None:
    rest = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode()) if k != "token"]
    location = scope["path"] + (f"?{urlencode(rest)}" if rest else "")
    cookie = f"{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict"
    headers = [
        (b"location", location.encode()),
        (b"set-cookie", cookie.encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

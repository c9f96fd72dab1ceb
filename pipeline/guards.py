"""Who and what ``kotae serve`` lets in: host names, the API key, CORS, slow clients, the bind address.

- **Host names (DNS rebinding).** :class:`HostGuard` answers 400 to a request whose ``Host``
  header is not a name the server was started for (:func:`served_names`): the bind address; for a
  loopback bind also ``localhost``, ``127.0.0.1`` and ``::1``; for a wildcard bind (``0.0.0.0``,
  ``::``) any IP address literal, ``localhost`` and this machine's host name; plus every
  ``--allowed-host`` entry (``*`` turns the check off). A page on another site that rebinds its
  own name to 127.0.0.1 still sends its own name as ``Host``, so it reads nothing.
- **Headers on every response.** :class:`SecurityHeaders` adds ``X-Content-Type-Options:
  nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and, unless the response
  brings its own (the page's is stricter), ``Content-Security-Policy: frame-ancestors 'none'``.
- **API key.** With a key set, every request except the public ones below must carry it, as
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, or the session cookie the server
  issued; otherwise 401 with one line saying how to send it. Keys are compared with
  :func:`hmac.compare_digest` (constant time).
- **Session cookie.** ``POST /api/session`` with the key in a header (the page does this once,
  after asking for the key) answers 204 with ``kotae_session``: ``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` when the request came over TLS, and worth an HMAC of the key
  under a secret drawn when the server started (so it never holds the key, and a restart ends
  every session). No script writes the key into a cookie; a ``kotae_api_key`` cookie left by
  older pages is not accepted, and is cleared.
- **Public with a key:** ``GET /health`` (what a load balancer probes), the page shell ``GET /``
  (a form; it holds no indexed text, and its script asks for the key once per tab) and
  ``/static/*`` (the page's own CSS and JS). Everything else — ``/ask``, ``/api/*``,
  ``/collection``, ``/docs``, ``/openapi.json`` — needs the key.
- **CORS** is off unless origins are listed (``--cors-origin``); then only those origins may call
  the API from a browser, with the key headers allowed.
- **Slow bodies.** A request whose body has not fully arrived within ``body_seconds`` gets 408
  (uvicorn itself bounds idle keep-alive connections, not slow bodies).
- **Slow headers (slowloris).** uvicorn has no header timeout: a client could send its headers a
  byte at a time, or trickle a body nobody reads, and hold the connection forever.
  :class:`SlowClientProtocol` (uvicorn's h11 protocol with a timer; :func:`uvicorn_config` uses it)
  gives each request ``header_seconds`` from the connection, or from the previous response, to
  deliver its headers (else 408 and the connection is closed), and closes a connection whose
  client is still sending a body ``header_seconds`` after its response went out.
- **Bind address.** :func:`check_bind` refuses a non-loopback address without a key unless
  ``insecure`` is set.

Example::

    access = ServerAccess(api_key="s3cret", cors_origins=("https://intra.example",), allowed_hosts=("qa.intra",))
    app = create_app(config, access=access)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import h11
import uvicorn
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from kotae.errors import KotaeError

API_KEY_ENV = "KOTAE_API_KEY"
SESSION_COOKIE = "kotae_session"
LEGACY_COOKIE = "kotae_api_key"
"""The raw-key cookie older pages set from JavaScript; never accepted, cleared when a session starts."""
SESSION_PATH = "/api/session"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
FRAME_POLICY = "frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": FRAME_POLICY,
}
"""Sent with every response (:class:`SecurityHeaders`); a page replaces the CSP with its own stricter one."""
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = ("/static/",)
KEY_HEADERS = ("Authorization", "X-API-Key", "Content-Type")
CLIENT_SECONDS = 10.0
logger = logging.getLogger("kotae.server")


@dataclass(frozen=True)
class ServerAccess:
    """Access settings of the service.

    :param api_key: The key every non-public request must carry; None for no key (loopback use).
    :param cors_origins: Origins allowed to call the API from a browser; empty for no CORS.
    :param body_seconds: How long a client may take to send its request body.
    :param header_seconds: How long a client may take to send a request's headers (counted from
        the connection or the previous response); used by :func:`uvicorn_config`.
    :param bind_host: The address the server listens on; decides the host names served.
    :param allowed_hosts: More host names (or addresses) served; ``*`` serves any.
    """

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    body_seconds: float = CLIENT_SECONDS
    header_seconds: float = CLIENT_SECONDS
    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is blank; pass a real key or none")
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()):
            raise ValueError("the API key must be printable ASCII: it travels in an HTTP header")
        for name in ("body_seconds", "header_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0, but got {getattr(self, name)}")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"a CORS origin looks like https://host[:port], but got {origin!r}")
        for name in self.allowed_hosts:
            if name != "*" and host_name(f"[{name.strip('[]')}]" if ":" in name else name) is None:
                raise ValueError(
                    f"an allowed host is a name or address such as qa.intra or 10.0.0.5, but got {name!r}"
                )


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Raise KotaeError unless ``host`` is loopback, a key is set, or the user chose ``insecure``."""
    if is_loopback(host) or api_key or insecure:
        return
    raise KotaeError(
        f"binding {host} exposes kotae to the network: set an API key (--api-key or ${API_KEY_ENV}), "
        "or pass --insecure to serve without one"
    )


def normal_name(name: str) -> str:
    """A host name or address as compared: lower case, no brackets or trailing dot, IPs in short form."""
    name = name.strip().strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def host_name(value: str) -> str | None:
    """The name in a ``Host`` header (port, brackets and a trailing dot dropped, lower case), or None if malformed.

    >>> host_name("[::1]:8000"), host_name("LocalHost.:80"), host_name("a b:80")
    ('::1', 'localhost', None)
    """
    value = value.strip()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = value.partition(":")
        if colon and not port.isdigit():
            return None
    name = normal_name(name)
    if not name or any(c.isspace() or c in "/\\@?#[]" for c in name):
        return None
    return name


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def served_names(
    bind_host: str, allowed: tuple[str, ...] = (), machine: tuple[str, ...] = ()
) -> frozenset[str]:
    """The host names a server bound to ``bind_host`` answers (besides any IP literal for a wildcard bind).

    ``machine`` is this machine's own names, served on a wildcard bind.

    >>> sorted(served_names("127.0.0.1", ("qa.intra",)))
    ['127.0.0.1', '::1', 'localhost', 'qa.intra']
    >>> sorted(served_names("0.0.0.0", machine=("box",)))
    ['127.0.0.1', '::1', 'box', 'localhost']
    """
    bind = normal_name(bind_host)
    names = {bind} if bind not in WILDCARD_BINDS else set(machine)
    if bind in WILDCARD_BINDS or is_loopback(bind):
        names.update(LOOPBACK_NAMES)
    names.update(normal_name(name) for name in allowed)
    return frozenset(normal_name(name) for name in names if name)


def host_allowed(host_header: str | None, names: frozenset[str], any_ip: bool) -> bool:
    """Whether a request with this ``Host`` header is for this server."""
    name = host_name(host_header) if host_header else None
    if name is None:
        return False
    return name in names or (any_ip and is_ip_address(name))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries in a header (Bearer token or X-API-Key), or None. Cookies never carry it."""
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = headers.get(b"x-api-key")
    if header:
        return header.decode("latin-1").strip()
    return None


def request_cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    """The value of cookie ``name`` in a request, or None (also for a malformed Cookie header)."""
    cookie = headers.get(b"cookie")
    if not cookie:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie.decode("latin-1"))
    except Exception:  # a malformed cookie header is simply no cookie
        return None
    return jar[name].value if name in jar else None


def session_token(secret: bytes, api_key: str) -> str:
    """The session cookie's value: an HMAC-SHA256 of the key under the server's secret (never the key)."""
    return hmac.new(secret, api_key.encode("utf-8"), hashlib.sha256).hexdigest()


def session_cookies(token: str, secure: bool) -> list[tuple[bytes, bytes]]:
    """``Set-Cookie`` headers that start a session and clear the raw-key cookie of older pages."""
    flags = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return [
        (b"set-cookie", f"{SESSION_COOKIE}={token}{flags}".encode()),
        (b"set-cookie", f"{LEGACY_COOKIE}=; Max-Age=0{flags}".encode()),
    ]


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the presented key with the expected one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8"))


async def _send_json(send: Send, status: int, content: dict[str, Any], extra: list[Any]) -> None:
    body = json.dumps(content).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyGuard:
    """ASGI middleware: 401 for a non-public request without the right key or session; issues sessions.

    ``POST /api/session`` with the key in a header answers 204 and sets the session cookie.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key
        self.session = session_token(secrets.token_bytes(32), api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        by_header = key_matches(presented_key(headers), self.api_key)
        if by_header and scope.get("path") == SESSION_PATH and scope.get("method") == "POST":
            cookies = session_cookies(self.session, secure=scope.get("scheme") == "https")
            await send({"type": "http.response.start", "status": 204, "headers": cookies})
            await send({"type": "http.response.body", "body": b""})
            return
        if by_header or key_matches(request_cookie(headers, SESSION_COOKIE), self.session):
            await self.app(scope, receive, send)
            return
        await _send_json(
            send,
            401,
            {
                "error": "this server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            },
            [(b"www-authenticate", b'Bearer realm="kotae"')],
        )


class BodyDeadline:
    """ASGI middleware: 408 when the request body has not arrived within ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:  # after the body, receive() waits for the disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise HTTPException(
                    status_code=408, detail=f"the request body did not arrive within {self.seconds:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, bounded, send)


class HostGuard:
    """ASGI middleware: 400 for a request whose ``Host`` is not one this server was started for."""

    def __init__(self, app: ASGIApp, bind_host: str, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        wildcard = normal_name(bind_host) in WILDCARD_BINDS
        self.any_host = "*" in allowed_hosts
        self.any_ip = wildcard
        self.names = served_names(bind_host, allowed_hosts, (socket.gethostname(),) if wildcard else ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any_host:
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if host_allowed(host, self.names, self.any_ip):
            await self.app(scope, receive, send)
            return
        served = ", ".join(sorted(self.names)) + (", any IP address" if self.any_ip else "")
        message = (
            f"Host {host[:100]!r} is not a name this server was started for ({served}); "
            "to serve it, restart kotae serve with --allowed-host NAME"
        )
        await _send_json(send, 400, {"error": message}, [])


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every response (those it does not set itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers") or []))
            await send(message)

        await self.app(scope, receive, with_headers)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus whichever of :data:`SECURITY_HEADERS` they lack."""
    present = {name.lower() for name, _ in headers}
    extra = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
    return headers + [(name, value) for name, value in extra if name not in present]


def add_access(app: Any, access: ServerAccess) -> None:
    """Add the body deadline, the key guard, CORS (so preflights need no key), the host check and
    the security headers (outermost, so every answer, a 400 or 401 too, carries them) to ``app``."""
    app.add_middleware(BodyDeadline, seconds=access.body_seconds)
    if access.api_key:
        app.add_middleware(ApiKeyGuard, api_key=access.api_key)
    if access.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(access.cors_origins),
            allow_methods=["GET", "POST", "HEAD"],
            allow_headers=list(KEY_HEADERS),
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(HostGuard, bind_host=access.bind_host, allowed_hosts=access.allowed_hosts)
    app.add_middleware(SecurityHeaders)


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose client keeps it waiting for a request.

    A timer of ``request_seconds`` runs whenever the server waits on the client rather than on the
    app: from the connection (or the end of the previous response) until a request's headers are
    complete, and after a response while the client is still sending a body the app did not read.
    When it fires, a client that sent part of its headers gets 408; the connection is then closed.
    While the app handles a request the timer is off (:class:`BodyDeadline` bounds body reads).
    """

    request_seconds: float = CLIENT_SECONDS
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch(restart=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._watch(restart=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _waiting_on_client(self) -> bool:
        state = self.conn.their_state
        app_done = self.cycle is None or self.cycle.response_complete
        return state is h11.IDLE or (state is h11.SEND_BODY and app_done)

    def _watch(self, restart: bool = False) -> None:
        if restart or not self._waiting_on_client():
            self._stop()
        if self._waiting_on_client() and self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_seconds, self._timed_out)

    def _stop(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or not self._waiting_on_client():
            return
        partial, _ = self.conn.trailing_data
        if self.conn.their_state is h11.IDLE and partial:  # h11 cannot answer a request it has not parsed
            message = f"the request headers did not arrive within {self.request_seconds:g} s"
            body = json.dumps({"error": message}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
        logger.info("closed a connection from %s that sent no complete request in time", self.client)
        self.transport.close()


def slow_client_protocol(seconds: float) -> type[SlowClientProtocol]:
    """A :class:`SlowClientProtocol` class whose clients get ``seconds`` (uvicorn builds one per connection)."""
    if seconds <= 0:
        raise ValueError(f"the client timeout must be greater than 0, but got {seconds}")
    return type("SlowClientProtocol", (SlowClientProtocol,), {"request_seconds": float(seconds)})


def uvicorn_config(
    app: Any, host: str, port: int, access: ServerAccess, log_level: str = "info"
) -> uvicorn.Config:
    """How ``kotae serve`` runs ``app``: one worker, short keep-alive, slow clients cut off."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        log_level=log_level,
        timeout_keep_alive=5,
        http=slow_client_protocol(access.header_seconds),
    )

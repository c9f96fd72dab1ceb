"""Who and what ``kotae serve`` lets in: the API key, CORS, slow request bodies, the bind address.

- **API key.** With a key set, every request except the public ones below must carry it, as
  ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or the page's ``kotae_api_key`` cookie
  (``SameSite=Strict``, set by the page's script from the key it keeps in ``sessionStorage``);
  otherwise 401 with one line saying how to send it. Keys are compared with
  :func:`hmac.compare_digest` (constant time).
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

    app = create_app(config, access=ServerAccess(api_key="s3cret", cors_origins=("https://intra.example",)))
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote

import h11
import uvicorn
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from kotae.errors import KotaeError

API_KEY_ENV = "KOTAE_API_KEY"
COOKIE_NAME = "kotae_api_key"
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
    """

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    body_seconds: float = CLIENT_SECONDS
    header_seconds: float = CLIENT_SECONDS

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


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries (Bearer token, X-API-Key or the page's cookie), or None."""
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = headers.get(b"x-api-key")
    if header:
        return header.decode("latin-1").strip()
    cookie = headers.get(b"cookie")
    if cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie.decode("latin-1"))
        except Exception:  # a malformed cookie header is simply no key
            return None
        if COOKIE_NAME in jar:
            return unquote(jar[COOKIE_NAME].value)  # the page URI-encodes it
    return None


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
    """ASGI middleware: 401 for a non-public request without the right key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if key_matches(presented_key(headers), self.api_key):
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


def add_access(app: Any, access: ServerAccess) -> None:
    """Add the key guard, the body deadline and CORS (outermost, so preflights need no key) to ``app``."""
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

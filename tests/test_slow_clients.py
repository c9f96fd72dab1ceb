"""Slow clients are cut off: slowloris headers, trickled bodies, silent connections.

Over real HTTP on 127.0.0.1: uvicorn runs with :func:`kotae.pipeline.guards.uvicorn_config`, exactly as
``kotae serve`` does, with a 1 s client timeout; one test runs the ``kotae serve`` command itself.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from kotae.pipeline.guards import ServerAccess, uvicorn_config
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, ServedCommand, TinySetup, build_tiny_setup

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
TIMEOUT = 1.0
SLACK = 6.0  # a loaded CI machine: the cut-off may come late, never never


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("slow"))


@pytest.fixture(scope="module")
def server(setup: TinySetup) -> Iterator[ServedApp]:
    config = setup.config(CONFIGS / "bm25.yaml")
    access = ServerAccess(body_seconds=TIMEOUT, header_seconds=TIMEOUT)
    app = create_app(config, answerer=QuestionAnswerer.from_config(config), access=access)
    with ServedApp(app, lambda a, port: uvicorn_config(a, "127.0.0.1", port, access, "critical")) as running:
        yield running


def _trickle(port: int, head: bytes, drip: bytes, every: float = 0.2) -> tuple[bytes, float]:
    """Send ``head``, then ``drip`` every ``every`` s until the server closes; what came back and when.

    Fails if the server still holds the connection after ``TIMEOUT + SLACK`` seconds.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        started = time.monotonic()
        if head:
            conn.sendall(head)
        reply = b""
        while time.monotonic() - started < TIMEOUT + SLACK:
            ready, _, _ = select.select([conn], [], [], every)
            try:
                if ready:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return reply, time.monotonic() - started
                    reply += chunk
                elif drip:
                    conn.sendall(drip)
            except OSError:  # reset by the server: closed
                return reply, time.monotonic() - started
    raise AssertionError(
        f"the server still holds a slow connection after {TIMEOUT + SLACK} s: {reply[:200]!r}"
    )


def test_slowloris_headers_get_408_and_are_disconnected_while_others_are_served(server: ServedApp) -> None:
    answered: list[int] = []

    def ask_meanwhile() -> None:
        time.sleep(0.2)
        answered.append(httpx.get(server.url + "/health", timeout=30).status_code)

    other = threading.Thread(target=ask_meanwhile)
    other.start()
    reply, seconds = _trickle(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")
    other.join()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"connection: close" in reply.lower()
    assert b"the request headers did not arrive within 1 s" in reply
    assert TIMEOUT * 0.9 <= seconds < TIMEOUT + SLACK
    assert answered == [200], "a slow client must not hold up the others"


def test_a_silent_connection_is_closed_without_a_reply(server: ServedApp) -> None:
    reply, seconds = _trickle(server.port, b"", b"")
    assert reply == b"" and seconds < TIMEOUT + SLACK


def test_a_trickled_body_is_bounded_whether_the_app_reads_it_or_not(server: ServedApp) -> None:
    # the app reads it: BodyDeadline answers 408, then the connection is closed
    head = b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    reply, seconds = _trickle(server.port, head + b'{"question": "', b"a")
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply, reply[:200]
    assert seconds < 2 * TIMEOUT + SLACK
    # answered without reading it (405, 413): uvicorn alone would wait for the rest forever
    for length, status in ((10_000, b"405"), (100_000, b"413")):
        head = f"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()
        reply, seconds = _trickle(server.port, head, b"a")
        assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
        assert seconds < TIMEOUT + SLACK


def test_patient_enough_clients_and_keep_alive_are_unaffected(server: ServedApp) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        for piece in (
            b"GET /health HT",
            b"TP/1.1\r\nHost: 127.0.0.1\r\n",
            b"\r\n",
        ):  # in 0.6 s, under the 1 s
            conn.sendall(piece)
            time.sleep(0.3)
        first = conn.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
    with httpx.Client(base_url=server.url, timeout=30) as client:  # one kept-alive connection
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(TIMEOUT * 0.5)
        response = client.post("/ask", json={"question": "富士山の高さは？"})
        assert response.status_code == 200 and response.json()["answers"]


def test_kotae_serve_cuts_off_a_slowloris_client(setup: TinySetup) -> None:
    args = ["--config", str(CONFIGS / "bm25.yaml"), "--client-timeout", str(TIMEOUT)]
    for override in setup.overrides:
        args += ["--set", override]
    with ServedCommand(args, timeout=180) as served:
        reply, seconds = _trickle(served.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")
        assert reply.startswith(b"HTTP/1.1 408") and seconds < TIMEOUT + SLACK, reply[:200]


def test_the_client_timeout_is_documented_and_validated() -> None:
    from typer.testing import CliRunner

    from kotae.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "--client-timeout" in result.output and "408" in result.output
    with pytest.raises(ValueError, match="header_seconds"):
        ServerAccess(header_seconds=0)

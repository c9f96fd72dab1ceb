"""Who gets in: API key on every route but /health, / and /static; CORS off unless listed; slow bodies; bind checks.

Over real HTTP on 127.0.0.1 (uvicorn in a thread), plus the page asking for the key in Chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kotae.errors import KotaeError
from kotae.pipeline.guards import (
    SESSION_COOKIE,
    ServerAccess,
    check_bind,
    is_loopback,
    key_matches,
    presented_key,
    request_cookie,
)
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
KEY = "k3y-for-tests"
ORIGIN = "https://intranet.example"
PROTECTED = [
    ("POST", "/ask"),
    ("POST", "/api/ask"),
    ("GET", "/api/collection"),
    ("GET", "/api/document?id=x"),
    ("GET", "/collection"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]
PUBLIC = ["/health", "/", "/static/app.js"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def qa(setup: TinySetup) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIGS / "bm25.yaml"))


@pytest.fixture(scope="module")
def keyed(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[ServedApp]:
    access = ServerAccess(api_key=KEY, cors_origins=(ORIGIN,), body_seconds=1.0)
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa, access=access)) as running:
        yield running


@pytest.fixture(scope="module")
def open_server(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[ServedApp]:
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa)) as running:
        yield running


def _request(server: ServedApp, method: str, path: str, **kwargs: object) -> httpx.Response:
    if method == "POST":
        kwargs.setdefault("json", {"question": "富士山の高さは？"})
    return httpx.request(method, server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_other_route_needs_the_key(keyed: ServedApp, method: str, path: str) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        denied = _request(keyed, method, path, headers=headers)
        assert denied.status_code == 401, (headers, denied.text)
        assert "API key" in denied.json()["error"] and denied.headers["www-authenticate"].startswith("Bearer")
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        allowed = _request(keyed, method, path, headers=headers)
        assert allowed.status_code != 401, (headers, allowed.text)
        assert allowed.status_code < 500
    raw_key_cookie = _request(keyed, method, path, headers={"Cookie": f"kotae_api_key={KEY}"})
    assert raw_key_cookie.status_code == 401  # issue 23: a cookie never carries the key itself
    session = httpx.post(keyed.url + "/api/session", headers={"X-API-Key": KEY}).cookies[SESSION_COOKIE]
    cookie = _request(keyed, method, path, headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    assert (
        cookie.status_code != 401
    )  # the server-issued session cookie (HttpOnly, SameSite=Strict) opens /collection


def test_health_page_shell_and_static_stay_public(keyed: ServedApp) -> None:
    for path in PUBLIC:
        response = httpx.get(keyed.url + path)
        assert response.status_code == 200, path
    assert "金閣寺" not in httpx.get(keyed.url + "/").text  # the shell holds no indexed text


def test_keyed_answers_match_the_open_server(keyed: ServedApp, open_server: ServedApp) -> None:
    body = {"question": "What is the capital of Japan?", "top_k": 2}
    expected = httpx.post(open_server.url + "/ask", json=body).json()["answers"]
    got = httpx.post(keyed.url + "/ask", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert got.status_code == 200 and got.json()["answers"] == expected


def test_cors_is_off_by_default_and_limited_to_listed_origins(
    keyed: ServedApp, open_server: ServedApp
) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "x-api-key,content-type"
    plain = httpx.options(open_server.url + "/ask", headers=preflight)
    assert "access-control-allow-origin" not in plain.headers
    simple = httpx.get(open_server.url + "/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in simple.headers

    allowed = httpx.options(keyed.url + "/ask", headers=preflight)  # no key on a preflight
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(keyed.url + "/ask", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answered = httpx.post(
        keyed.url + "/ask", json={"question": "京都"}, headers={"Origin": ORIGIN, "X-API-Key": KEY}
    )
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN


def test_a_slow_body_gets_408(keyed: ServedApp) -> None:
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=10) as conn:
        conn.sendall(
            b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Length: 40\r\n\r\n".encode()
            + b'{"question": '
        )
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 8
    assert b"did not arrive within 1 s" in reply or b"\r\n\r\n" in reply


def test_bind_rules() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(host, None, insecure=False)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(KotaeError, match="--api-key"):
            check_bind(host, None, insecure=False)
        check_bind(host, "key", insecure=False)
        check_bind(host, None, insecure=True)
    with pytest.raises(ValueError, match="blank"):
        ServerAccess(api_key="  ")
    with pytest.raises(ValueError, match="ASCII"):
        ServerAccess(api_key="鍵のかぎ")
    with pytest.raises(ValueError, match="origin"):
        ServerAccess(cors_origins=("intranet.example",))


def test_presented_key_and_constant_time_match() -> None:
    assert presented_key({b"authorization": b"Bearer abc"}) == "abc"
    assert presented_key({b"authorization": b"bearer  abc "}) == "abc"
    assert presented_key({b"authorization": b"Basic abc"}) is None
    assert presented_key({b"x-api-key": b"abc"}) == "abc"
    assert presented_key({b"cookie": b"a=1; kotae_api_key=abc"}) is None  # issue 23: never from a cookie
    assert request_cookie({b"cookie": b"a=1; kotae_session=abc"}, SESSION_COOKIE) == "abc"
    assert request_cookie({b"cookie": b'bad"cookie;;=='}, SESSION_COOKIE) is None
    assert key_matches("abc", "abc") and not key_matches("abd", "abc") and not key_matches(None, "abc")
    assert not key_matches("ab", "abc") and not key_matches("ü", "abc")


def test_serve_refuses_a_public_address_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KOTAE_API_KEY"}
    kotae = Path(sys.executable).with_name("kotae")
    result = subprocess.run(
        [str(kotae), "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--api-key" in lines[0] and "--insecure" in lines[0], result.stderr


def test_the_page_asks_for_the_key_once_per_tab(keyed: ServedApp) -> None:
    from test_web_page import CHROMIUM, CHROMIUM_ARGS, _chromium_or_skip

    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    prompts: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=keyed.url, locale="ja-JP")
            context.set_default_timeout(20_000)
            page = context.new_page()

            def answer(dialog: object) -> None:
                prompts.append(dialog.message)  # type: ignore[attr-defined]
                dialog.accept(KEY)  # type: ignore[attr-defined]

            page.on("dialog", answer)
            page.goto("/")
            for question in ("富士山の高さは？", "What is the capital of Japan?"):
                page.fill("#q", question)
                with page.expect_response(lambda r: "/api/ask" in r.url and r.status == 200):
                    page.press("#q", "Enter")
                page.wait_for_selector("#results[aria-busy=false] :is(.answer, #no-answer)")
            assert len(prompts) == 1 and "API" in prompts[0]
            assert page.evaluate("sessionStorage.getItem('kotae.apiKey')") == KEY
            page.goto("/collection")  # a navigation: the session cookie carries the key
            assert page.locator("main").count() == 1 and "API key" not in page.content()
            cookies = {
                cookie["name"]: cookie for cookie in context.cookies()
            }  # issue 23: issued by the server
            assert KEY not in page.evaluate("document.cookie") and "kotae_api_key" not in cookies
            session = cookies[SESSION_COOKIE]
            assert session["httpOnly"] and session["sameSite"] == "Strict" and KEY not in session["value"]
            other_tab = browser.new_context(base_url=keyed.url).new_page()
            other_tab.goto("/")
            assert other_tab.evaluate("sessionStorage.getItem('kotae.apiKey')") is None
        finally:
            browser.close()

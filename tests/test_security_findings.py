"""The seven findings of issue 23, each attack replayed against a real server on 127.0.0.1 or the real CLI.

1. DNS rebinding: a request for another host name reads nothing (400), every mode.
2. Terminal escapes: ``kotae feedback list`` and ``kotae ask`` print control characters as escapes.
3. Bad filters: 400 with one line (also in tests/test_api_fuzz.py, which now fuzzes filters).
4. ``/docs``: kotae's own page, no CDN; nosniff and frame-ancestors on every response.
5. The page's key: a server-issued HttpOnly, SameSite=Strict session cookie, never the key itself.
6. Symbolic links out of the corpus: skipped, counted, and not served.
7. Pipeline YAML: no remote code, no pickled weights, whatever the parameters say.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kotae.cli import app as cli_app
from kotae.errors import KotaeError
from kotae.indexing.job import IndexSummary, run_index
from kotae.pipeline.build import load_pipeline_yaml
from kotae.pipeline.guards import SESSION_COOKIE, ServerAccess, host_allowed, served_names
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, TinySetup, build_tiny_setup
from kotae.terminal import printable

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
KEY = "k3y-for-tests"
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"
FORGED_ROW = "\n999\t2026-01-01T00:00:00+00:00\tcorrect\tfake question\tshown: fake"
SECRET = "the operator's private notes: 合言葉はひらけごま"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    """The tiny corpus plus a link to a file outside it, indexed the default way (links not followed)."""
    root = tmp_path_factory.mktemp("findings")
    setup = build_tiny_setup(root, index=False)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (setup.corpus / "notes.txt").symlink_to(outside / "secret.txt")
    return setup


@pytest.fixture(scope="module")
def summary(setup: TinySetup) -> IndexSummary:
    return run_index(setup.config(CONFIGS / "bm25.yaml"), [setup.corpus])


@pytest.fixture(scope="module")
def qa(setup: TinySetup, summary: IndexSummary) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIGS / "bm25.yaml"))


@pytest.fixture(scope="module")
def open_server(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[ServedApp]:
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa)) as running:
        yield running


@pytest.fixture(scope="module")
def keyed(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[ServedApp]:
    access = ServerAccess(api_key=KEY)
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa, access=access)) as running:
        yield running


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "KOTAE_API_KEY")}
    return {**env, "HAYSTACK_TELEMETRY_ENABLED": "False", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


def _kotae(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in its own process; stdout as bytes, exactly what a terminal would receive."""
    return subprocess.run(
        [sys.executable, "-m", "kotae", *args], capture_output=True, env=_environment(), timeout=300
    )


def _feedback(server: ServedApp, question: str) -> dict[str, Any]:
    """A 'correct' verdict on the first answer to 富士山の高さは？, asked as ``question``."""
    response = httpx.post(
        server.url + "/api/ask", json={"question": "富士山の高さは？", "top_k": 1}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer = next(a for a in response.json()["answers"] if a["answer"] is not None)
    return {
        "question": question,
        "verdict": "correct",
        "passage_id": answer["passage_id"],
        "answer_start": answer["passage_start"],
        "answer_end": answer["passage_end"],
    }


# ------------------------------------------------------------------------------ 1. DNS rebinding


def test_1_a_rebound_host_name_reads_no_document_and_posts_no_feedback(
    setup: TinySetup, qa: QuestionAnswerer, open_server: ServedApp
) -> None:
    document = str((setup.corpus / "fuji.txt").resolve())
    port = open_server.port
    honest = httpx.get(open_server.url + "/api/document", params={"id": document})
    assert honest.status_code == 200 and "富士山" in honest.json()["text"]
    for name in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", f"LOCALHOST.:{port}"):
        response = httpx.get(
            open_server.url + "/api/document", params={"id": document}, headers={"Host": name}
        )
        assert response.status_code == 200, (name, response.text)

    feedback = _feedback(open_server, "x")
    for name in (
        f"attacker.example:{port}",
        "attacker.example",
        "127.0.0.1.nip.io",
        "localhost.attacker.example",
    ):
        headers = {"Host": name}
        read = httpx.get(open_server.url + "/api/document", params={"id": document}, headers=headers)
        assert read.status_code == 400 and "富士山" not in read.text, (name, read.text)
        message = read.json()["error"]
        assert "--allowed-host" in message and "\n" not in message
        posted = httpx.post(open_server.url + "/feedback", json=feedback, headers=headers)
        assert posted.status_code == 400, posted.text
        for path in ("/", "/health", "/api/collection", "/collection", "/docs"):
            assert httpx.get(open_server.url + path, headers=headers).status_code == 400, (name, path)

    # with a key too, and with names added by --allowed-host
    access = ServerAccess(api_key=KEY, allowed_hosts=("qa.intra",))
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa, access=access)) as keyed:
        with_key = {"X-API-Key": KEY}
        assert httpx.get(keyed.url + "/health", headers={"Host": "qa.intra"}).status_code == 200
        listed = httpx.get(
            keyed.url + "/api/collection", headers={**with_key, "Host": f"qa.intra:{keyed.port}"}
        )
        assert listed.status_code == 200
        rebound = httpx.get(keyed.url + "/api/collection", headers={**with_key, "Host": "attacker.example"})
        assert rebound.status_code == 400


def test_1_the_names_each_bind_address_serves() -> None:
    loopback = served_names("127.0.0.1")
    assert loopback == {"127.0.0.1", "::1", "localhost"}
    assert served_names("::1") == loopback and served_names("localhost") == loopback
    assert served_names("10.0.0.5", ("qa.intra",)) == {"10.0.0.5", "qa.intra"}
    wildcard = served_names("0.0.0.0", machine=("box",))
    for host in ("192.168.1.5:8000", "[fe80::1]:8000", "box:8000", "localhost"):
        assert host_allowed(host, wildcard, any_ip=True), host
    for host in ("attacker.example:8000", "192.168.1.5.nip.io", "", "a b", "[::1", "box:http"):
        assert not host_allowed(host, wildcard, any_ip=True), host
    assert not host_allowed("192.168.1.5", loopback, any_ip=False)


def test_1_kotae_serve_answers_only_the_names_it_was_started_for(
    setup: TinySetup, summary: IndexSummary
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "kotae", "serve", "--config", str(CONFIGS / "bm25.yaml")]
    command += ["--port", str(port), "--allowed-host", "qa.intra"]
    for override in setup.overrides:
        command += ["--set", override]
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(360):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            import time

            time.sleep(0.5)
        assert httpx.get(url + "/api/collection", headers={"Host": f"qa.intra:{port}"}).status_code == 200
        rebound = httpx.get(url + "/api/collection", headers={"Host": f"attacker.example:{port}"})
        assert rebound.status_code == 400 and "qa.intra" in rebound.json()["error"]
    finally:
        process.terminate()
        process.wait(timeout=30)


# ------------------------------------------------------------------------------ 2. terminal escapes


def test_2_printable_escapes_every_control_character() -> None:
    assert printable(ESCAPES + FORGED_ROW) == (
        "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31m\\n999\\t2026-01-01T00:00:00+00:00\\tcorrect\\tfake question\\tshown: fake"
    )
    assert printable("\u202eevil\u2066 \x9b31m \r\x00\x7f") == "\\u202eevil\\u2066 \\x9b31m \\r\\x00\\x7f"
    assert printable("富士山は3776メートル。 Tokyo, 1868.") == "富士山は3776メートル。 Tokyo, 1868."


def test_2_feedback_list_shows_a_hostile_question_as_one_harmless_line(
    setup: TinySetup, open_server: ServedApp
) -> None:
    hostile = "富士山の高さは？" + ESCAPES + FORGED_ROW
    posted = httpx.post(open_server.url + "/feedback", json=_feedback(open_server, hostile))
    assert posted.status_code == 201, posted.text

    index = ["--index-dir", str(setup.index_dir)]
    listed = _kotae("feedback", "list", *index)
    assert listed.returncode == 0, listed.stderr.decode()
    for control in (b"\x1b", b"\x07", b"\r"):
        assert control not in listed.stdout, listed.stdout
    rows = listed.stdout.decode().splitlines()
    assert not any(row.startswith("999") for row in rows), rows  # no forged row
    [row] = [row for row in rows if "pwned" in row]
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31m\\n999" in row

    as_json = _kotae("feedback", "list", *index, "--json")
    records = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert hostile in [record["question"] for record in records]  # --json keeps the text as it was


def test_2_the_server_log_writes_a_hostile_request_path_as_escapes(
    setup: TinySetup, qa: QuestionAnswerer, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa)

    @app.get("/boom/{name}")
    def _boom(name: str) -> None:  # any route that fails unexpectedly logs its path
        raise RuntimeError("boom")

    with caplog.at_level("ERROR", logger="kotae"), ServedApp(app) as served:
        response = httpx.get(served.url + "/boom/%1b%5D0%3Bpwned%07fake")
    assert response.status_code == 500
    [record] = [r for r in caplog.records if "error while handling" in r.getMessage()]
    line = record.getMessage()
    assert r"GET /boom/\x1b]0;pwned\x07fake" in line, line
    assert not any(control in line for control in "\x1b\x07\n\r"), line


def test_2_kotae_ask_prints_corpus_escapes_as_text(setup: TinySetup, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentence = f"The zebra{ESCAPES} lives in Africa.\r1. fake answer  score 0.999 "
    (corpus / f"evil{ESCAPES}.txt").write_text(sentence * 8, encoding="utf-8")
    overrides = [f"index.dir={json.dumps(str(tmp_path / 'index'))}"]
    run_index(setup.config(CONFIGS / "bm25.yaml", overrides), [corpus])
    args = ["ask", "Where does the zebra live?", "--config", str(CONFIGS / "bm25.yaml"), "--top-k", "2"]
    for override in [*setup.overrides, *overrides]:
        args += ["--set", override]
    shown = _kotae(*args)
    assert shown.returncode == 0, shown.stderr.decode()
    for control in (b"\x1b", b"\x07", b"\r"):
        assert control not in shown.stdout, shown.stdout
    assert b"evil\\x1b]0;pwned\\x07" in shown.stdout  # the source's name, as visible text

    raw = _kotae(*args, "--json")
    record = json.loads(raw.stdout.decode())["answers"][0]
    assert ESCAPES in record["source"]  # --json is unchanged (JSON escapes control characters itself)


# ------------------------------------------------------------------------------ 3. filters (see test_api_fuzz)


def test_3_a_filter_comparing_text_with_a_number_is_a_4xx(open_server: ServedApp) -> None:
    for value in ("abc", {"a": 1}, [1, 2]):
        filters = {"field": "meta.start", "operator": ">", "value": value}
        body = {"question": "富士山の高さは？", "filters": filters}
        for path in ("/ask", "/api/ask"):
            response = httpx.post(open_server.url + path, json=body, timeout=60)
            assert 400 <= response.status_code < 500, (value, response.text)
            assert "\n" not in response.json()["error"]


# ------------------------------------------------------------------------------ 4. /docs and headers


def test_4_docs_come_from_kotae_and_every_response_carries_the_headers(
    open_server: ServedApp, keyed: ServedApp
) -> None:
    docs = httpx.get(open_server.url + "/docs")
    assert docs.status_code == 200 and "POST /ask" in docs.text and "/openapi.json" in docs.text
    sources = re.findall(r"""<(?:script|link)[^>]+(?:src|href)=["']([^"']+)""", docs.text)
    assert sources and all(source.startswith(("/static/", "data:")) for source in sources), sources
    assert "cdn" not in docs.text.lower() and "script-src 'self'" in docs.headers["content-security-policy"]
    assert httpx.get(open_server.url + "/redoc").status_code == 404

    responses = [
        docs,
        httpx.get(open_server.url + "/health"),
        httpx.get(open_server.url + "/openapi.json"),
        httpx.get(open_server.url + "/static/app.js"),
        httpx.get(open_server.url + "/nowhere"),
        httpx.post(open_server.url + "/ask", json={"question": ""}),
        httpx.post(
            open_server.url + "/ask", content=b"x" * 100_000, headers={"content-type": "application/json"}
        ),
        httpx.get(open_server.url + "/health", headers={"Host": "attacker.example"}),
        httpx.get(keyed.url + "/api/collection"),
        httpx.get(keyed.url + "/docs", headers={"X-API-Key": KEY}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 422, 413, 400, 401, 200]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.request.url
        assert response.headers["x-frame-options"] == "DENY"


# ------------------------------------------------------------------------------ 5. the session cookie


def _set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def test_5_the_server_issues_an_httponly_session_cookie_that_is_not_the_key(
    setup: TinySetup, qa: QuestionAnswerer, keyed: ServedApp
) -> None:
    assert "document.cookie" not in httpx.get(keyed.url + "/static/app.js").text
    assert httpx.post(keyed.url + "/api/session", headers={"X-API-Key": "wrong"}).status_code == 401
    started = httpx.post(keyed.url + "/api/session", headers={"X-API-Key": KEY})
    assert started.status_code == 204 and KEY not in str(started.headers)
    [session] = [c for c in _set_cookies(started) if c.startswith(SESSION_COOKIE + "=")]
    flags = [flag.strip() for flag in session.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(flags) and "Secure" not in flags
    assert any(c.startswith("kotae_api_key=;") and "Max-Age=0" in c for c in _set_cookies(started))
    token = started.cookies[SESSION_COOKIE]

    assert httpx.get(keyed.url + "/collection", cookies={SESSION_COOKIE: token}).status_code == 200
    assert httpx.get(keyed.url + "/api/collection", cookies={SESSION_COOKIE: token}).status_code == 200
    tampered = token[:-1] + ("1" if token.endswith("0") else "0")  # always differs from the real token
    for cookies in ({"kotae_api_key": KEY}, {SESSION_COOKIE: KEY}, {SESSION_COOKIE: tampered}):
        assert httpx.get(keyed.url + "/collection", cookies=cookies).status_code == 401, cookies

    over_tls = httpx.post(
        keyed.url + "/api/session", headers={"X-API-Key": KEY, "X-Forwarded-Proto": "https"}
    )
    assert "Secure" in [flag.strip() for flag in _set_cookies(over_tls)[0].split(";")]

    access = ServerAccess(api_key=KEY)
    with ServedApp(create_app(setup.config(CONFIGS / "bm25.yaml"), answerer=qa, access=access)) as restarted:
        assert httpx.get(restarted.url + "/collection", cookies={SESSION_COOKIE: token}).status_code == 401


# ------------------------------------------------------------------------------ 6. symbolic links


def test_6_a_link_out_of_the_corpus_is_skipped_counted_and_not_served(
    setup: TinySetup, summary: IndexSummary, open_server: ServedApp, tmp_path: Path
) -> None:
    link = setup.corpus / "notes.txt"
    secret = str(link.resolve())
    assert [p.source for p in summary.skipped] == [str(link)]
    assert (
        "outside the corpus folder" in summary.skipped[0].reason
        and "--follow-symlinks" in summary.skipped[0].reason
    )
    assert any(note.startswith("1 symbolic link") for note in summary.notes)
    for document_id in (secret, str(link)):
        response = httpx.get(open_server.url + "/api/document", params={"id": document_id})
        assert response.status_code == 404 and SECRET not in response.text
    assert SECRET not in httpx.get(open_server.url + "/api/collection").text
    asked = httpx.post(open_server.url + "/api/ask", json={"question": "合言葉は？", "top_k": 5}, timeout=60)
    assert SECRET not in asked.text

    args = ["index", "--corpus", str(setup.corpus), "--config", str(CONFIGS / "bm25.yaml"), "--json"]
    for override in [*setup.overrides, f"index.dir={json.dumps(str(tmp_path / 'index'))}"]:
        args += ["--set", override]
    skipped = _kotae(*args)
    assert skipped.returncode == 0, skipped.stderr.decode()
    assert json.loads(skipped.stdout)["skipped"][0]["source"] == str(link)
    followed = _kotae(*args, "--follow-symlinks")
    report = json.loads(followed.stdout)
    assert report["skipped"] == [] and report["added"] == 1  # the linked file, on request


# ------------------------------------------------------------------------------ 7. pipeline YAML


def test_7_pipeline_yaml_cannot_turn_on_remote_code_or_pickled_weights(setup: TinySetup) -> None:
    args = ["pipeline", "show", "--config", str(CONFIGS / "default.yaml")]
    for override in setup.overrides:
        args += ["--set", override]
    shown = CliRunner().invoke(cli_app, args)
    assert shown.exit_code == 0, shown.output
    good = yaml.safe_load(shown.stdout)

    def edited(**parameters: Any) -> str:
        data = json.loads(json.dumps(good))
        data["components"]["query_embedder"]["init_parameters"].update(parameters)
        return yaml.safe_dump(data)

    attacks = [
        ({"trust_remote_code": True, "model_kwargs": {"use_safetensors": False}}, "use_safetensors"),
        ({"trust_remote_code": True}, "trust_remote_code"),
        ({"model_kwargs": {"use_safetensors": False}}, "use_safetensors"),
        ({"model_kwargs": {"trust_remote_code": True}}, "trust_remote_code"),
        ({"tokenizer_kwargs": {"trust_remote_code": True}}, "trust_remote_code"),
        ({"config_kwargs": {"trust_remote_code": "yes"}}, "trust_remote_code"),
    ]
    for parameters, key in attacks:
        with pytest.raises(KotaeError) as refused:
            load_pipeline_yaml(edited(**parameters))
        message = str(refused.value)
        assert key in message and "query_embedder" in message and "\n" not in message, message

    forced = load_pipeline_yaml(edited(model_kwargs=None, trust_remote_code=None))
    embedder = forced.get_component("query_embedder")
    assert embedder.model_kwargs["use_safetensors"] is True and embedder.trust_remote_code is False

    def without(*names: str) -> str:  # a hand-written YAML that leaves the loading parameters out
        data = json.loads(json.dumps(good))
        for name in names:
            data["components"]["query_embedder"]["init_parameters"].pop(name, None)
        return yaml.safe_dump(data)

    omitted = load_pipeline_yaml(without("model_kwargs", "trust_remote_code")).get_component("query_embedder")
    assert omitted.model_kwargs["use_safetensors"] is True and omitted.trust_remote_code is False
    with pytest.raises(KotaeError, match="model_kwargs must be a mapping"):
        load_pipeline_yaml(edited(model_kwargs="x"))

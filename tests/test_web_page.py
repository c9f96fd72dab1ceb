"""The question page in a real browser: Debian's headless Chromium driven by Playwright over real HTTP.

One server (uvicorn on 127.0.0.1, the tiny Japanese + English corpus with tiny models, plus a
hostile document) and one browser serve the whole module. The tiny reader is untrained, so answers
are arbitrary spans: the tests check the page's structure (the highlighted <mark> is exactly the
answer, the document dialog marks the same characters), not the answers' quality.

Screenshots go to ``$KOTAE_SCREENSHOTS`` (default ``tests/.screenshots/``, git-ignored).

Without /usr/bin/chromium (or Playwright) the browser tests skip on a developer machine and fail
in CI (``CI`` set), where ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, TinySetup, build_tiny_setup
from kotae.pipeline.web import CONTENT_SECURITY_POLICY, rebuild_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
CHROMIUM = Path(os.environ.get("KOTAE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
SCREENSHOTS = Path(os.environ.get("KOTAE_SCREENSHOTS") or Path(__file__).parent / ".screenshots")

JA = "富士山の高さは？"
EN = "What is the capital of Japan?"
HOSTILE_TITLE = '<img src=x onerror="window.__pwned=2">悪意のある文書'
HOSTILE_TEXT = (
    "pwned の説明: <script>window.__pwned=1</script> と "
    '<img src=x onerror="window.__pwned=1"> はただの文字です。'
    "The tags <b>bold</b> and <iframe src=javascript:alert(1)></iframe> stay text."
)


LONG_TEXT = "\n".join(
    f"Line {n}: the river passes village number {n} before it reaches the sea." for n in range(1, 61)
)


def _chromium_or_skip() -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium fonts-noto-cjk)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason and IN_CI:
        pytest.fail(f"browser tests must run in CI: {reason}; .ci/run installs it")
    if reason:
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------- pure parts


def test_rebuild_text_keeps_offsets_and_fills_gaps() -> None:
    source = "東京は首都です。\n大阪は商業の町です。 Osaka has castles. Kyoto has temples."
    spans = [(0, 8), (9, 19), (20, 38), (32, 58)]  # a gap after 8 and 19, an overlap at 32
    pieces = [(s, e, source[s:e]) for s, e in spans]
    text, filled = rebuild_text(pieces)
    assert len(text) == len(source) and filled == 2
    for s, e in spans:
        assert text[s:e] == source[s:e]
    assert text[8] == "\n" and text[19] == " "
    assert rebuild_text(list(reversed(pieces))) == (text, filled)
    assert rebuild_text([]) == ("", 0)
    assert rebuild_text([(3, 5, "ab")]) == ("   ab", 3)


# ---------------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    from kotae.indexing.job import run_index

    setup = build_tiny_setup(tmp_path_factory.mktemp("web"), index=False)
    record = {"id": "hostile", "title": HOSTILE_TITLE, "text": HOSTILE_TEXT}
    (setup.corpus / "hostile.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", "utf-8")
    (setup.corpus / "long.txt").write_text(LONG_TEXT, "utf-8")
    setup.texts["long.txt"] = LONG_TEXT
    run_index(setup.config(), [setup.corpus])
    return setup


@pytest.fixture(scope="module")
def qa(setup: TinySetup) -> QuestionAnswerer:
    return QuestionAnswerer.from_config(setup.config(CONFIGS / "default.yaml"))


@pytest.fixture(scope="module")
def server(setup: TinySetup, qa: QuestionAnswerer) -> Iterator[ServedApp]:
    app = create_app(setup.config(CONFIGS / "default.yaml"), answerer=qa)
    with ServedApp(app) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class _Page:
    """A fresh browser context and page; records console errors (CSP violations land there)."""

    def __init__(self, browser: Any, server: ServedApp, **options: Any) -> None:
        self.context = browser.new_context(base_url=server.url, locale="ja-JP", **options)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.asked: list[str] = []
        self.page.on("request", lambda r: "/api/ask" in r.url and self.asked.append(r.url))

    def close(self, allow_errors: bool = False) -> None:
        self.context.close()
        if not allow_errors:
            assert not self.errors, self.errors


@pytest.fixture
def open_page(browser: Any, server: ServedApp) -> Iterator[Any]:
    opened: list[_Page] = []

    def make(**options: Any) -> _Page:
        page = _Page(browser, server, **options)
        opened.append(page)
        return page

    yield make
    for page in opened:
        page.close(allow_errors=getattr(page, "allow_errors", False))


def _ask(page: Any, question: str) -> None:
    page.fill("#q", question)
    with page.expect_response(lambda r: "/api/ask" in r.url):
        page.press("#q", "Enter")
    page.wait_for_selector("#results[aria-busy=false] :is(.answer, #no-answer, #error)")


def _check_highlight(page: Any) -> list[str]:
    """Every answer card's <mark> is exactly its answer; returns the answers."""
    cards = page.locator(".answer")
    assert cards.count() >= 1
    answers = []
    for i in range(cards.count()):
        card = cards.nth(i)
        answer = card.locator(".answer-text").inner_text()
        assert card.locator(".passage mark").count() == 1
        assert card.locator(".passage mark").text_content() == card.locator(".answer-text").text_content()
        assert card.locator(".source code").count() == 1
        answers.append(answer)
    return answers


def expect(target: Any) -> Any:
    """Playwright's auto-waiting assertions (imported late: the module loads without Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))  # the viewport: what a person sees first


# ---------------------------------------------------------------------------------------- the page


def test_page_headers_and_no_inline_code(server: ServedApp) -> None:
    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200
    assert httpx.head(f"{server.url}/").status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert re.findall(r"<script(?![^>]*\ssrc=)", html) == []  # every script is a file
    assert " style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html  # nothing from another origin
    escaped = httpx.get(f"{server.url}/", params={"q": '"><script>alert(1)</script>'}).text
    assert "<script>alert(1)" not in escaped and "&lt;script&gt;alert(1)" in escaped
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    for bad in ("../web.py", "..%2Fweb.py", "nope.js", "app.js.map"):
        assert httpx.get(f"{server.url}/static/{bad}").status_code == 404


@pytest.mark.parametrize(("name", "question"), [("ja", JA), ("en", EN)])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_ask_in_japanese_and_english_shows_highlighted_answers(
    open_page: Any, setup: TinySetup, name: str, question: str, scheme: str
) -> None:
    tab = open_page(color_scheme=scheme, viewport={"width": 1000, "height": 800})
    page = tab.page
    page.goto("/")
    assert page.evaluate("document.activeElement.id") == "q"  # focused on load
    _ask(page, question)
    answers = _check_highlight(page)
    assert "秒" in page.inner_text("#status") and " s" in page.inner_text("#status")
    assert page.locator(".answer .score").first.inner_text().startswith("スコア")
    assert page.url.endswith("/?q=" + _quote(question) + "&k=5")
    assert len(answers) <= 5
    # The retrieved passages, on demand.
    details = page.locator("details.retrieved")
    assert details.count() == 1 and not details.locator(".retrieved-passage").first.is_visible()
    _shot(page, f"ask-{name}-{scheme}")
    details.locator("summary").click()
    first = details.locator(".retrieved-passage").first
    assert first.is_visible()
    passage = first.locator(".passage").text_content()
    first.locator("button.show-doc").click()  # the passage, marked in its whole document
    expect(page.locator("#doc-answer")).to_have_text(passage or "")
    page.keyboard.press("Escape")
    # The top-k control is sent with the question.
    page.select_option("#k", "1")
    _ask(page, question)
    assert page.locator(".answer").count() == 1 and page.url.endswith("&k=1")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_whole_document_is_shown_scrolled_to_the_answer(open_page: Any, setup: TinySetup) -> None:
    page = open_page(viewport={"width": 900, "height": 700}).page
    page.goto("/")
    _ask(page, JA)
    card = page.locator(".answer").first
    answer = card.locator(".answer-text").text_content()
    card.locator("button.show-doc").click()
    mark = page.locator("#doc #doc-answer")
    mark.wait_for()
    assert mark.text_content() == answer and mark.is_visible()
    source = card.locator(".source code").text_content()
    text = page.locator("#doc-text").text_content()
    assert text == setup.texts[Path(source).name]  # rebuilt exactly from the passages
    _shot(page, "document-ja")
    page.keyboard.press("Escape")
    assert not page.locator("#doc").is_visible()


def test_long_document_scrolls_to_the_answer_and_survives_a_changed_file(
    open_page: Any, server: ServedApp, setup: TinySetup
) -> None:
    long_file = setup.corpus / "long.txt"
    document = httpx.get(f"{server.url}/api/document", params={"id": str(long_file)}).json()
    assert document["text"] == LONG_TEXT and document["from_source_file"] is True
    assert len(document["passages"]) > 10
    start = LONG_TEXT.index("village number 57")
    end = start + len("village number 57")
    page = open_page(viewport={"width": 900, "height": 600}).page
    page.goto("/")
    page.evaluate(  # a result card's button, pointing near the end of the long document
        """([id, start, end]) => {
            const b = document.createElement("button");
            b.className = "show-doc"; b.id = "probe"; b.textContent = "probe";
            b.dataset.documentId = id; b.dataset.start = start; b.dataset.end = end;
            document.getElementById("results").append(b);
        }""",
        [str(long_file), start, end],
    )
    page.click("#probe")
    mark = page.locator("#doc-answer")
    mark.wait_for()
    assert mark.text_content() == "village number 57"
    expect(mark).to_be_in_viewport(ratio=1)  # scrolled into view inside the dialog's text box
    assert page.evaluate("document.getElementById('doc-text').scrollTop") > 0
    assert not page.locator("#doc-note").is_visible()
    page.keyboard.press("Escape")
    try:  # the file changes after indexing: the view is rebuilt from the passages, offsets intact
        long_file.write_text(LONG_TEXT.replace("village", "town"), "utf-8")
        changed = httpx.get(f"{server.url}/api/document", params={"id": str(long_file)}).json()
        assert changed["from_source_file"] is False
        assert changed["text"][start:end] == "village number 57" and len(changed["text"]) == len(LONG_TEXT)
        page.click("#probe")
        expect(page.locator("#doc-note")).to_be_visible()
        assert page.locator("#doc-answer").text_content() == "village number 57"
        assert "rebuilt from the indexed passages" in page.inner_text("#doc-note")
    finally:
        long_file.write_text(LONG_TEXT, "utf-8")


def test_enter_during_ime_composition_does_not_submit(open_page: Any) -> None:
    tab = open_page()
    page = tab.page
    page.goto("/")
    page.focus("#q")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.imeSetComposition", {"text": "ふじさん", "selectionStart": 4, "selectionEnd": 4})
    assert page.input_value("#q") == "ふじさん"
    page.keyboard.press("Enter")  # confirms the conversion: must not ask
    page.wait_for_timeout(400)
    assert tab.asked == [] and page.locator("#results > *").count() == 0
    cdp.send("Input.insertText", {"text": "富士山"})  # the composition is committed
    assert page.input_value("#q") == "富士山"
    page.keyboard.type("の高さは？")
    with page.expect_response(lambda r: "/api/ask" in r.url):
        page.keyboard.press("Enter")
    page.wait_for_selector(".answer, #no-answer")
    assert len(tab.asked) == 1 and page.url.endswith("/?q=" + _quote(JA) + "&k=5")


def test_loading_indicator_while_the_question_runs(
    open_page: Any, qa: QuestionAnswerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    run = qa.pipeline.run

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return run(*args, **kwargs)

    monkeypatch.setattr(qa.pipeline, "run", slow)
    page = open_page().page
    page.goto("/")
    page.fill("#q", JA)
    page.press("#q", "Enter")
    page.wait_for_selector("#status.loading .spinner")
    assert "考えています" in page.inner_text("#status")
    assert page.get_attribute("#results", "aria-busy") == "true"
    release.set()
    page.wait_for_selector("#results[aria-busy=false] .answer")
    assert "考えています" not in page.inner_text("#status")


def test_no_answer_above_the_threshold(
    open_page: Any, qa: QuestionAnswerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = qa.pipeline.get_component("reader")
    reader.warm_up()
    monkeypatch.setattr(reader, "no_answer", True)  # the null answer beats every span
    settings = replace(reader.settings, null_score_threshold=-1e9)
    monkeypatch.setattr(reader, "loaded", replace(reader.loaded, settings=settings))
    page = open_page().page
    page.goto("/")
    _ask(page, EN)
    notice = page.locator("#no-answer")
    assert notice.is_visible()
    assert (
        "見つかりませんでした" in notice.inner_text()
        and "No answer above the threshold" in notice.inner_text()
    )
    assert "答えなし" in page.inner_text("#status")
    _shot(page, "no-answer")


def test_server_error_shows_a_clear_message_without_a_traceback(
    open_page: Any, qa: QuestionAnswerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError('secret detail: Traceback (most recent call last): File "/etc/passwd"')

    monkeypatch.setattr(qa.pipeline, "run", broken)
    tab = open_page()
    tab.allow_errors = True  # the browser logs the failed request (HTTP 500) as a console error
    page = tab.page
    page.goto("/")
    _ask(page, JA)
    error = page.locator("#error")
    assert error.is_visible() and error.get_attribute("role") == "alert"
    shown = page.inner_text("body")
    assert "サーバーで問題が起きた" in shown and "The server failed while answering" in shown
    assert "secret" not in shown and "Traceback" not in shown and "passwd" not in shown
    assert all("500" in message for message in tab.errors), tab.errors
    _shot(page, "server-error")


def test_a_rejected_question_says_why(open_page: Any) -> None:
    tab = open_page()
    tab.allow_errors = True  # the browser logs the 422 as a console error
    page = tab.page
    page.goto("/")
    page.evaluate("document.getElementById('q').value = 'x'.repeat(1001)")  # past maxlength
    with page.expect_response(lambda r: "/api/ask" in r.url) as response:
        page.press("#q", "Enter")
    assert response.value.status == 422
    error = page.locator("#error")
    expect(error).to_contain_text("受け付けられませんでした")
    assert "at most 1000 characters" in error.inner_text()


def test_hostile_document_shows_as_text_and_runs_nothing(open_page: Any) -> None:
    page = open_page().page
    page.goto("/?q=" + _quote("pwned script onerror iframe bold tags"))
    page.wait_for_selector(".answer, #no-answer")
    page.locator("details.retrieved summary").click()
    shown = page.locator(".retrieved-passage").all_inner_texts()  # tiny passages: tags are split
    assert any("<script>window." in text for text in shown)
    assert any("The tags <b>bold</b> and" in text for text in shown)
    assert page.locator(".retrieved-passage .title", has_text=HOSTILE_TITLE).count() >= 1
    page.goto("/collection")
    page.get_by_role("button", name=HOSTILE_TITLE).click()
    page.locator("#doc-text").wait_for()
    page.wait_for_function("document.getElementById('doc-text').textContent.includes('iframe')")
    assert page.locator("#doc-text").text_content() == HOSTILE_TEXT
    page.keyboard.press("Escape")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main iframe, main b, dialog img, dialog script").count() == 0


def test_keyboard_only(open_page: Any) -> None:
    page = open_page().page
    page.goto("/")
    page.keyboard.press("Tab")  # from the focused box to the next control, and back
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type(EN)
    with page.expect_response(lambda r: "/api/ask" in r.url):
        page.keyboard.press("Enter")
    page.wait_for_selector(".answer")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('show-doc')"):
            break
    else:
        pytest.fail("Tab never reached a 'show the whole document' button")
    answer = page.locator(".answer").first.locator(".answer-text").text_content()
    page.keyboard.press("Enter")
    page.locator("#doc-answer").wait_for()
    assert page.locator("#doc").is_visible() and page.locator("#doc-answer").text_content() == answer
    assert page.evaluate("document.activeElement.id") == "doc-close"
    page.keyboard.press("Enter")  # close
    assert not page.locator("#doc").is_visible()
    assert page.evaluate("document.activeElement.classList.contains('show-doc')")
    # The retrieved passages open from the keyboard too (past each answer's feedback buttons).
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "SUMMARY":
            break
    else:
        pytest.fail("Tab never reached the retrieved passages")
    page.keyboard.press("Enter")
    assert page.locator(".retrieved-passage").first.is_visible()


def test_share_url_asks_on_load_and_back_restores(open_page: Any) -> None:
    tab = open_page()
    page = tab.page
    page.goto("/?q=" + _quote(EN) + "&k=3")
    page.wait_for_selector(".answer, #no-answer")
    assert page.input_value("#q") == EN and page.input_value("#k") == "3"
    assert 1 <= page.locator(".answer").count() <= 3
    _ask(page, JA)
    assert page.url.endswith(_quote(JA) + "&k=3")
    page.go_back()
    page.wait_for_function(f"document.getElementById('q').value === {json.dumps(EN)}")
    page.wait_for_selector("#results[aria-busy=false] .answer")
    assert page.title().startswith(EN)


def test_collection_view(open_page: Any, server: ServedApp, setup: TinySetup) -> None:
    info = httpx.get(f"{server.url}/api/collection").json()
    assert info["documents"] == len(setup.texts) + 1 and info["passages"] >= info["documents"]
    assert info["pipeline"]["retriever"] == "hybrid" and info["pipeline"]["reader"] == "kotae"
    assert info["index_changed"].endswith("Z")
    page = open_page().page
    page.goto("/collection")
    assert page.inner_text("#documents-count") == str(info["documents"])
    assert page.inner_text("#passages-count") == str(info["passages"])
    assert "hybrid" in page.inner_text("#retriever")
    assert str(setup.reader) in page.inner_text("main")
    assert page.locator("time[data-local]").inner_text().endswith(f"({info['index_changed']})")
    _shot(page, "collection")
    missing = httpx.get(f"{server.url}/api/document", params={"id": "no/such/document"})
    assert missing.status_code == 404 and "no document" in missing.json()["error"]


def test_phone_width_is_readable(open_page: Any) -> None:
    for scheme in ("light", "dark"):
        page = open_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, color_scheme=scheme
        ).page
        page.goto("/")
        _ask(page, JA)
        _check_highlight(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        _shot(page, f"phone-ja-{scheme}")
        page.locator(".answer button.show-doc").first.click()
        page.locator("#doc-answer").wait_for()
        box = page.locator("#doc").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        _shot(page, f"phone-document-{scheme}")


def test_an_answer_from_a_pdf_shows_its_page(browser: Any, tmp_path: Path) -> None:
    """A PDF-only corpus: every answer card says "p. N", N being the page its passage lies on."""
    from kotae.indexing.job import run_index
    from kotae.indexing.readers import read_corpus
    from kotae.indexing.testing import write_pdf

    pdf_setup = build_tiny_setup(tmp_path, index=False)
    for name in list(pdf_setup.texts):
        (pdf_setup.corpus / name).unlink()
    pages = [
        ["Mount Fuji is the highest mountain in Japan.", "It is 3776 metres high."],
        ["Kyoto became the capital in 794.", "It has many old temples."],
        ["Tokyo became the capital in 1868."],
    ]
    pdf = write_pdf(pdf_setup.corpus / "guide.pdf", pages, title="Japan guide")
    run_index(pdf_setup.config(), [pdf_setup.corpus])
    (document,), _ = read_corpus([pdf])
    config = pdf_setup.config(CONFIGS / "bm25.yaml")
    with ServedApp(create_app(config, answerer=QuestionAnswerer.from_config(config))) as pdf_server:
        tab = _Page(browser, pdf_server)
        page = tab.page
        page.goto("/")
        page.fill("#q", "When did Tokyo become the capital?")
        with page.expect_response(lambda r: "/api/ask" in r.url) as asked:
            page.press("#q", "Enter")
        page.wait_for_selector("#results[aria-busy=false] .answer")
        answers = [a for a in asked.value.json()["answers"] if a["answer"] is not None]
        cards = page.locator(".answer")
        assert answers and cards.count() == len(answers)
        for number, answer in enumerate(answers):
            on_page = sum(1 for start in document.page_starts if start <= answer["start"])
            assert answer["page"] == on_page
            expect(cards.nth(number).locator(".source .page")).to_have_text(f"p. {on_page}")
        _shot(page, "answer-from-pdf")
        tab.close()

"""Feedback on the question page, in a real browser: correct, wrong with a selected span, no answer.

Reuses the server, browser and page fixtures of tests/test_web_page.py (Debian's headless Chromium
via Playwright, uvicorn on 127.0.0.1, the tiny corpus and models). Each test checks what the page
shows and what reached the label store (``<index dir>/feedback.sqlite3``).
"""

from __future__ import annotations

from typing import Any

from test_web_page import (  # noqa: F401  (fixtures)
    JA,
    _ask,
    _shot,
    browser,
    expect,
    open_page,
    qa,
    server,
    setup,
)

from kotae.pipeline.feedback import FeedbackStore, Label
from kotae.pipeline.testing import TinySetup


def _labels(setup: TinySetup) -> list[Label]:  # noqa: F811
    store = FeedbackStore(setup.index_dir)
    try:
        return store.labels()
    finally:
        store.close()


def _select(card: Any, start: int, end: int) -> str:
    """Select characters [start, end) of the card's passage (across its text nodes) as a user would."""
    return str(
        card.locator(".passage").evaluate(
            """(node, [start, end]) => {
                const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
                const range = document.createRange();
                let seen = 0;
                for (let text = walker.nextNode(); text; text = walker.nextNode()) {
                    const length = text.textContent.length;
                    if (start >= seen && start <= seen + length && length) range.setStart(text, start - seen);
                    if (end >= seen && end <= seen + length && length) {
                        range.setEnd(text, end - seen);
                        break;
                    }
                    seen += length;
                }
                const selection = window.getSelection();
                selection.removeAllRanges();
                selection.addRange(range);
                return selection.toString();
            }""",
            [start, end],
        )
    )


def test_mark_an_answer_correct(open_page: Any, setup: TinySetup) -> None:  # noqa: F811
    opened = open_page()
    page = opened.page
    page.goto("/")
    _ask(page, JA)
    card = page.locator(".answer").first
    before = len(_labels(setup))
    card.locator(".feedback-correct").click()
    expect(card.locator(".feedback-status.sent")).to_contain_text("Thank you")
    expect(card.locator(".feedback-correct")).to_be_disabled()
    labels = _labels(setup)
    assert len(labels) == before + 1
    label = labels[-1]
    assert label.verdict == "correct" and label.question == JA
    assert label.answer_text == card.locator(".answer-text").text_content()
    assert label.reader_model == str(setup.reader)


def test_correct_a_wrong_answer_by_selecting_the_span(open_page: Any, setup: TinySetup) -> None:  # noqa: F811
    opened = open_page()
    page = opened.page
    page.goto("/")
    _ask(page, JA)
    card = page.locator(".answer").first
    card.locator(".feedback-wrong").click()
    expect(card.locator(".feedback-fix")).to_be_visible()

    # Nothing selected (or a selection outside the passage): the page says what to do.
    card.locator(".feedback-selection").click()
    expect(card.locator(".feedback-status.failed")).to_contain_text("Select the answer")

    passage = str(card.locator(".passage").text_content())
    start, end = 1, min(5, len(passage))  # across the <mark> when the answer is near the start
    selected = _select(card, start, end)
    assert selected == passage[start:end]
    _shot(page, "feedback-select")
    card.locator(".feedback-selection").click()
    expect(card.locator(".feedback-status.sent")).to_contain_text("Thank you")
    _shot(page, "feedback-sent")
    label = _labels(setup)[-1]
    assert label.verdict == "wrong"
    assert (label.corrected_start, label.corrected_end) == (start, end)
    assert label.corrected_text == selected
    assert label.passage_text == passage


def test_say_the_passage_has_no_answer(open_page: Any, setup: TinySetup) -> None:  # noqa: F811
    opened = open_page()
    page = opened.page
    page.goto("/")
    _ask(page, "What is the capital of Japan?")
    card = page.locator(".answer").first
    card.locator(".feedback-wrong").click()
    card.locator(".feedback-no-answer").click()
    expect(card.locator(".feedback-status.sent")).to_be_visible()
    label = _labels(setup)[-1]
    assert label.verdict == "no_answer" and label.corrected_start is None
    assert label.question == "What is the capital of Japan?"

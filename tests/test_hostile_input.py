"""Hostile input to the functional core, by property: any Unicode, any bytes, any logits.

- The splitter counts code points: for any ``str`` — surrogates, combining marks, full-width,
  emoji, RTL, NUL, very long lines — its passages map back exactly to their offsets. A lone
  surrogate can only enter through a JSON ``\\uD800`` escape; the corpus readers replace it with
  U+FFFD and report the repair, so none reaches a tokenizer or the store.
- The decoder's spans lie inside their context and are exactly its characters there, also through
  real tokenizer offsets.
- Metrics: 0 ≤ F1 ≤ 1 per example (0-100 aggregated), EM ≤ F1, both symmetric, a text scores 1
  against itself.
- Every corpus reader reads or skips-and-counts random bytes under every supported extension and
  never raises.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kotae.indexing.bm25 import bigram_tokenize
from kotae.indexing.readers import SUPPORTED_SUFFIXES, ReadReport, html_to_text, read_file
from kotae.indexing.split import split_text
from kotae.reader_training.decode import OUTSIDE, WindowLogits, choose_answer, decode
from kotae.reader_training.metrics import evaluate_predictions, exact_match_score, f1_score, score_example

HOSTILE_PIECES = [
    "東京は日本の首都です。",
    "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３。",
    "e\u0301\u0301\u0301 n\u0303 ",  # combining marks
    "👨\u200d👩\u200d👧 🇯🇵 😀",  # ZWJ sequences, flags, astral plane
    "مرحبا بالعالم. שלום עולם! \u202e\u202d",  # RTL text and bidi controls
    "\x00\x00NUL\x00",
    "\ud800 lone \udfff surrogates \udc00",
    "\u2028\u2029\x0b\x0c\x1c\x85",  # unusual line breaks
    "x" * 3000,  # a very long line without any break
    "。。。！！？？",
    "\ufeff\ufffd",
]
ANY_CHAR = st.characters(exclude_categories=())  # every code point, surrogates included
HOSTILE_TEXT = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(ANY_CHAR, max_size=40)), max_size=12
).map("".join)


def _chars(text: str) -> int:
    return len(text)


def _words(text: str) -> int:
    return len(text.split())


def _bigrams(text: str) -> int:
    return len(bigram_tokenize(text))


# ------------------------------------------------------------------------------------------ splitter


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=HOSTILE_TEXT,
    max_tokens=st.integers(1, 64),
    overlap=st.integers(0, 63),
    counter=st.sampled_from([_chars, _words, _bigrams]),
)
@example(text="".join(HOSTILE_PIECES), max_tokens=16, overlap=4, counter=_chars)
def test_split_any_unicode_maps_back_to_its_offsets(
    text: str, max_tokens: int, overlap: int, counter
) -> None:
    overlap = min(overlap, max_tokens - 1)
    passages = split_text(text, counter, max_tokens, overlap)
    for i, passage in enumerate(passages):
        assert passage.index == i
        assert 0 <= passage.start < passage.end <= len(text)
        assert text[passage.start : passage.end] == passage.text
    covered = {i for p in passages for i in range(p.start, p.end)}
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())


# ------------------------------------------------------------------------------------------ decoder


@st.composite
def windows_and_contexts(draw: st.DrawFn) -> tuple[list[WindowLogits], list[str]]:
    contexts = draw(st.lists(HOSTILE_TEXT.filter(bool), min_size=1, max_size=3))
    windows = []
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(contexts) - 1))
        size = len(contexts[index])
        length = draw(st.integers(1, 24))
        offsets = np.full((length, 2), OUTSIDE, dtype=np.int64)
        for t in range(length):
            if draw(st.booleans()):
                a = draw(st.integers(0, size - 1))
                b = draw(st.integers(a + 1, size))
                offsets[t] = (a, b)
        logits = st.floats(-1e6, 1e6, allow_nan=False)
        starts = np.array(draw(st.lists(logits, min_size=length, max_size=length)), np.float32)
        ends = np.array(draw(st.lists(logits, min_size=length, max_size=length)), np.float32)
        windows.append(WindowLogits(starts, ends, offsets, draw(st.integers(-1, length)), index))
    return windows, contexts


@settings(max_examples=150, deadline=None)
@given(data=windows_and_contexts(), n_best=st.integers(1, 20), max_len=st.integers(1, 30))
def test_decoded_spans_lie_inside_their_context(
    data: tuple[list[WindowLogits], list[str]], n_best: int, max_len: int
) -> None:
    windows, contexts = data
    decoded = decode(windows, contexts, n_best=n_best, max_answer_length=max_len)
    assert len(decoded.answers) <= n_best
    scores = [span.score for span in decoded.answers]
    assert scores == sorted(scores, reverse=True)
    assert len({(s.context_index, s.start, s.end) for s in decoded.answers}) == len(decoded.answers)
    for span in decoded.answers:
        context = contexts[span.context_index]
        assert 0 <= span.start < span.end <= len(context)
        assert span.text == context[span.start : span.end]
    best = choose_answer(decoded, allow_null=True)
    assert best is None or best in decoded.answers


@pytest.fixture(scope="module")
def tokenizer():
    from kotae.reader_training.testing import tiny_tokenizer

    return tiny_tokenizer([*HOSTILE_PIECES[:6], "What is it?"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    context=st.lists(st.sampled_from([*HOSTILE_PIECES[:6], "�", " ", "\n"]), min_size=1, max_size=10).map(
        "".join
    ),
    seed=st.integers(0, 2**16),
)
def test_decoded_spans_through_real_tokenizer_offsets(tokenizer, context: str, seed: int) -> None:
    from kotae.reader_training.features import tokenize_windows

    assume(context.strip())
    windows = tokenize_windows(tokenizer, ["What is it?"], [context], max_length=32, stride=8)
    rng = np.random.default_rng(seed)
    logits = [
        WindowLogits(
            rng.normal(size=len(w.input_ids)), rng.normal(size=len(w.input_ids)), w.offsets, w.cls_index, 0
        )
        for w in windows
    ]
    for span in decode(logits, [context], n_best=10, max_answer_length=8).answers:
        assert 0 <= span.start < span.end <= len(context)
        assert span.text == context[span.start : span.end] and span.text.strip()


# ------------------------------------------------------------------------------------------ metrics


@settings(max_examples=300, deadline=None)
@given(
    a=HOSTILE_TEXT | st.text(max_size=30),
    b=HOSTILE_TEXT | st.text(max_size=30),
    language=st.sampled_from(["en", "ja"]),
    v2=st.booleans(),
)
@example(a="the", b="a", language="en", v2=True)
@example(a="。", b="", language="ja", v2=False)
def test_metric_invariants(a: str, b: str, language, v2: bool) -> None:
    f1 = f1_score(a, b, language, version_2=v2)
    em = exact_match_score(a, b, language)
    assert 0.0 <= f1 <= 1.0 and em in (0.0, 1.0)
    assert em <= f1 or (not v2 and em == 1.0 and f1 == 0.0)  # v1.1: two empty answers share no token
    assert f1 == pytest.approx(f1_score(b, a, language, version_2=v2))
    assert em == exact_match_score(b, a, language)
    assert f1_score(a, a, language, version_2=True) == 1.0
    one, more = score_example(a, [b], language, v2), score_example(a, [b, a], language, v2)
    assert more[0] >= one[0] and more[1] >= one[1]  # another reference never lowers a score
    for version_2 in (True, False):  # percentages; EM ≤ F1 except v1.1's both-empty quirk
        result = evaluate_predictions({"q": a}, {"q": [b]}, language=language, version_2=version_2)
        assert 0.0 <= result["exact_match"] <= 100.0 and 0.0 <= result["f1"] <= 100.0
        assert result["exact_match"] <= result["f1"] + 1e-9 or not version_2


# ------------------------------------------------------------------------------------------ readers

RANDOM_BYTES = st.one_of(
    st.binary(max_size=600),
    HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda t, title, raw: (
            json.dumps({"id": t[:5], "text": t, "title": title}, ensure_ascii=raw).encode(
                "utf-8", "surrogatepass"
            )
            + b"\n{broken\n[1,2]\n"
        ),
        HOSTILE_TEXT,
        HOSTILE_TEXT,
        st.booleans(),
    ),
    st.builds(
        lambda t: json.dumps(
            {"data": [{"title": t, "paragraphs": [{"context": t}, {"context": 3}]}]}
        ).encode(),
        HOSTILE_TEXT,
    ),
    st.builds(
        lambda t: f"<html><title>{t}</title><body><script>{t}</script><p>{t}</p>".encode(errors="replace"),
        HOSTILE_TEXT,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=RANDOM_BYTES, suffix=st.sampled_from([*sorted(SUPPORTED_SUFFIXES), ".xls", ""]))
def test_every_reader_reads_or_skips_and_counts(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"doc{suffix}"
    path.write_bytes(data)
    report = ReadReport()
    documents = read_file(path, report)  # never raises
    assert documents or report.skipped
    for document in documents:
        for value in (document.text, document.title, document.id):
            value.encode("utf-8")  # no lone surrogate reaches the index
        assert "\x00" not in document.text and document.text.strip()


@settings(max_examples=100, deadline=None)
@given(html=HOSTILE_TEXT | st.text(st.sampled_from("<>/!-=\"' abcscriptp&;#x0"), max_size=200))
def test_html_to_text_never_raises(html: str) -> None:
    text, title = html_to_text(html)
    assert isinstance(text, str) and isinstance(title, str)


def test_lone_surrogates_in_json_are_replaced_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"id": "a\\udc00", "text": "前 \\ud800 後 \\ud83d\\ude00", "title": "\\uDFFF"}\n', "utf-8"
    )
    report = ReadReport()
    [document] = read_file(path, report)
    assert document.text == "前 \ufffd 後 😀" and document.title == "\ufffd"
    assert document.id.endswith("#a\ufffd")
    assert [p.reason for p in report.repaired] == ["3 lone UTF-16 surrogate(s) replaced with U+FFFD"]


# ------------------------------------------------------------------------------------------ untrusted files


def test_reader_weights_load_only_from_safetensors(tmp_path: Path) -> None:
    from kotae.errors import KotaeError
    from kotae.reader_training.evaluate import load_reader
    from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

    tokenizer = tiny_tokenizer(["東京", "Tokyo"])
    import torch

    model = tiny_reader(tokenizer)
    model.save_pretrained(tmp_path / "pickled")
    tokenizer.save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")  # the same weights, pickled
    with pytest.raises(KotaeError, match="cannot load"):
        load_reader(str(tmp_path / "pickled"))  # a pickle is never unpickled


def test_pipeline_yaml_is_loaded_safely(tmp_path: Path) -> None:
    from kotae.errors import KotaeError
    from kotae.pipeline.config import load_pipeline_config

    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"reader:\n  model: !!python/object/apply:os.system ['touch {marker}']\n", "utf-8")
    with pytest.raises((KotaeError, ValueError)):
        load_pipeline_config(config)
    assert not marker.exists()

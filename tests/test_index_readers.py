"""Corpus readers: every format, and bad input skipped or repaired and reported, never raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kotae.indexing.readers import read_corpus

JAQUAD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "jaquad" / "dev"


def test_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("東京は日本の首都です。", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Notes\n\nSome *markdown*.", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page</title><style>p{}</style></head>"
        "<body><p>富士山は高い。</p><script>alert(1)</script></body></html>",
        encoding="utf-8",
    )
    lines = [
        {"text": "one", "id": "x1", "title": "T1", "meta": {"lang": "en"}},
        {"text": "two"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    squad = {
        "data": [{"title": "Art", "paragraphs": [{"context": "ctx one", "qas": []}, {"context": "ctx two"}]}]
    }
    (tmp_path / "e.json").write_text(json.dumps(squad), encoding="utf-8")
    documents, report = read_corpus([tmp_path])
    by_id = {d.id: d for d in documents}
    assert report.skipped == [] and report.repaired == []
    assert by_id[str(tmp_path / "a.txt")].text == "東京は日本の首都です。"
    html = by_id[str(tmp_path / "c.html")]
    assert html.title == "Page" and html.text == "富士山は高い。"
    first = by_id[f"{tmp_path / 'd.jsonl'}#x1"]
    assert (first.text, first.title, first.meta) == ("one", "T1", {"lang": "en"})
    assert by_id[f"{tmp_path / 'd.jsonl'}#2"].text == "two"
    assert by_id[f"{tmp_path / 'e.json'}#0.1"].text == "ctx two"
    assert by_id[f"{tmp_path / 'e.json'}#0.0"].title == "Art"
    assert len(documents) == 7


def test_bad_inputs_are_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_bytes(b"  \n\n ")
    (tmp_path / "latin1.txt").write_bytes("café ok text ".encode() * 20 + b"\xff\xfe bad")
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)) * 10)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs.jsonl").write_bytes(
        b'{"text": "good line"}\n{"text": broken\n[1, 2]\n{"id": 1}\n\n{"text": "also good", "meta": 5}\n'
    )
    (tmp_path / "squad.json").write_text('{"data": [{"title": "x"}]}', encoding="utf-8")
    (tmp_path / "notjson.json").write_text("{nope", encoding="utf-8")
    documents, report = read_corpus([tmp_path, tmp_path / "missing.txt"])
    texts = sorted(d.text for d in documents)
    assert "also good" in texts and "good line" in texts and len(texts) == 3
    assert any(t.startswith("café") and "\ufffd" in t for t in texts)
    reasons = {Path(p.source.split("#")[0].split(":")[0]).name: p.reason for p in report.skipped}
    assert reasons["empty.txt"] == "empty file"
    assert reasons["blank.md"] == "empty file"
    assert reasons["binary.txt"].startswith("not UTF-8 text")
    assert reasons["image.png"] == "unsupported extension '.png'"
    assert reasons["missing.txt"] == "no such file or folder"
    assert reasons["notjson.json"].startswith("malformed JSON")
    assert "article without" in reasons["squad.json"]
    jsonl = [p for p in report.skipped if "docs.jsonl:" in p.source]
    assert [p.source.rsplit(":", 1)[1] for p in jsonl] == ["2", "3", "4"]
    assert jsonl[0].reason.startswith("malformed JSON")
    repaired = {Path(p.source.split(":")[0]).name: p.reason for p in report.repaired}
    assert "undecodable" in repaired["latin1.txt"]
    assert "meta" in repaired["docs.jsonl"]
    assert "summary" not in report.summary_lines()[0]
    assert report.summary_lines()[0] == f"{len(report.skipped)} skipped:"


def test_very_long_single_line(tmp_path: Path) -> None:
    long_text = "長" * 3_000_000  # one 9 MB line without a break
    (tmp_path / "long.txt").write_text(long_text, encoding="utf-8")
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": long_text}) + "\n" + '{"text": "ok"}\n')
    documents, report = read_corpus([tmp_path], max_chars=1_000_000)
    by_name = {Path(d.id.split("#")[0]).name: d for d in documents}
    assert len(by_name["long.txt"].text) == 1_000_000  # repaired: truncated
    assert by_name["long.jsonl"].text == "ok"  # the huge line is skipped, the next one kept
    assert any("truncated" in p.reason for p in report.repaired)
    assert any("longer than" in p.reason for p in report.skipped)


@pytest.mark.skipif(not JAQUAD_DEV.is_dir(), reason="JaQuAD dev not available (../shared/data)")
def test_jaquad_dev_contexts() -> None:
    documents, report = read_corpus([JAQUAD_DEV])
    assert len(documents) == 1431
    assert report.skipped == []
    assert all(d.title for d in documents)

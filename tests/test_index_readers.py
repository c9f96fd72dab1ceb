"""Corpus readers: every format, and bad input skipped or repaired and reported, never raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kotae.indexing.readers import read_corpus
from kotae.indexing.testing import write_pdf

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


# ------------------------------------------------------------------ PDF and DOCX (issue 22, point 5)


def write_docx(path: Path, paragraphs: list[str], table: list[list[str]], title: str = "") -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    for text in paragraphs[:1]:
        document.add_paragraph(text)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, cell in enumerate(row):
            grid.cell(r, c).text = cell
    for text in paragraphs[1:]:
        document.add_paragraph(text)
    document.save(str(path))
    return path


PDF_PAGES = [
    ["Mount Fuji is the highest mountain in Japan.", "It is 3776 metres high."],
    ["Kyoto became the capital in 794.", "It has many old temples."],
    ["Tokyo became the capital in 1868."],
]


def test_pdf_pages_and_offsets(tmp_path: Path) -> None:
    from kotae.indexing.readers import PAGE_BREAK

    write_pdf(tmp_path / "guide.pdf", PDF_PAGES, title="Japan guide")
    documents, report = read_corpus([tmp_path])
    assert report.skipped == [] and len(documents) == 1
    document = documents[0]
    assert document.title == "Japan guide"
    assert document.page_starts[0] == 0 and len(document.page_starts) == 3
    pages = document.text.split(PAGE_BREAK)
    assert all(document.text[s:].startswith(p) for s, p in zip(document.page_starts, pages, strict=True))
    assert "3776 metres" in pages[0] and "794" in pages[1] and "1868" in pages[2]


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    write_docx(
        tmp_path / "notes.docx",
        ["富士山は日本で一番高い山です。", "京都は794年に都になりました。"],
        [["山", "高さ"], ["富士山", "3776"]],
        title="メモ",
    )
    documents, report = read_corpus([tmp_path])
    assert report.skipped == [] and len(documents) == 1
    assert documents[0].title == "メモ" and documents[0].page_starts == ()
    assert (
        documents[0].text
        == "富士山は日本で一番高い山です。\n山\t高さ\n富士山\t3776\n京都は794年に都になりました。"
    )


def test_broken_pdf_and_docx_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    documents, report = read_corpus([tmp_path])
    reasons = {Path(p.source).name: p.reason for p in report.skipped}
    assert documents == []
    assert reasons["broken.pdf"].startswith("not a readable PDF file")
    assert reasons["broken.docx"].startswith("not a readable DOCX file")


def test_pdf_passages_keep_offsets_and_pages(tmp_path: Path) -> None:
    from kotae.indexing.job import run_index
    from kotae.indexing.store import FaissDocumentStore
    from kotae.indexing.testing import HashEmbedder
    from kotae.pipeline.config import load_pipeline_config

    (tmp_path / "corpus").mkdir()
    pdf = write_pdf(tmp_path / "corpus" / "guide.pdf", PDF_PAGES)
    (document,), _ = read_corpus([pdf])
    config = load_pipeline_config(None, ["index.passage_tokens=12", "index.overlap_tokens=0"])
    summary = run_index(config, [tmp_path / "corpus"], tmp_path / "index", embedder=HashEmbedder())
    assert summary.added == 1 and summary.skipped == []
    store = FaissDocumentStore(tmp_path / "index")
    passages = sorted(store.filter_documents(), key=lambda d: d.meta["passage_index"])
    store.close()
    assert len(passages) >= 3
    for passage in passages:
        start, end = passage.meta["start"], passage.meta["end"]
        assert document.text[start:end] == passage.content
    pages = {passage.content: passage.meta["page"] for passage in passages}
    assert [page for text, page in pages.items() if "3776" in text] == [1]
    assert [page for text, page in pages.items() if "794" in text] == [2]
    assert [page for text, page in pages.items() if "1868" in text] == [3]


def test_answers_from_a_pdf_carry_their_page(tmp_path: Path) -> None:
    """`kotae ask` over an indexed PDF: every answer's `page` is the page its passage lies on."""
    from typer.testing import CliRunner

    from kotae.cli import app
    from kotae.indexing.job import run_index
    from kotae.pipeline.testing import build_tiny_setup

    setup = build_tiny_setup(tmp_path, index=False)
    for name in list(setup.texts):
        (setup.corpus / name).unlink()
    pdf = write_pdf(setup.corpus / "guide.pdf", PDF_PAGES)
    run_index(setup.config(), [setup.corpus])
    (document,), _ = read_corpus([pdf])
    configs = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
    args = ["ask", "When did Kyoto become the capital?", "--config", str(configs / "bm25.yaml"), "-k", "3"]
    args += [f"--set={override}" for override in setup.overrides]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)["answers"]
    assert answers
    for answer in answers:
        page = sum(1 for start in document.page_starts if start <= answer["start"])
        assert answer["page"] == page and document.text[answer["start"] : answer["end"]] == answer["answer"]
    shown = CliRunner().invoke(app, args)
    assert f"page {answers[0]['page']}" in shown.stdout

"""Span edges inside Japanese tokens (kotae.reader_training.edges): morphemes, the learnt table, the refiner
the decoder takes, and the miss classes of the model card. Token offsets are written by hand here, as
the e5 tokenizer cuts these texts (``▁1983 | 年に | 生まれた``)."""

from __future__ import annotations

import numpy as np
import pytest

from kotae.errors import KotaeError
from kotae.reader_training.decode import WindowLogits, decode
from kotae.reader_training.edges import (
    EdgeRefiner,
    EdgeTable,
    classify_miss,
    learn_edge_table,
    load_edge_table,
    morphemes,
)

BORN = "1983年に生まれた"  # MeCab: 1983 | 年 | に | 生まれ | た
BORN_TOKENS = [(0, 4), (4, 6), (6, 10)]  # ▁1983 | 年に | 生まれた


def test_morphemes_carry_their_character_offsets() -> None:
    words = morphemes(BORN)
    assert [(m.start, m.end, m.surface, m.pos) for m in words] == [
        (0, 4, "1983", "名詞"),
        (4, 5, "年", "名詞"),
        (5, 6, "に", "助詞"),
        (6, 9, "生まれ", "動詞"),
        (9, 10, "た", "助動詞"),
    ]


def test_the_table_counts_a_gold_end_cut_inside_its_token() -> None:
    table = learn_edge_table([(BORN, 0, 5)], lambda context: BORN_TOKENS, min_support=1)
    assert table.end == {"助詞:に": [1, 1]}  # 年に cut after 年: the に left out was cut once in one
    assert table.start == {}  # ▁1983 starts at the gold start: no boundary inside it


def test_a_gold_end_at_the_token_end_counts_as_not_cut() -> None:
    table = learn_edge_table([(BORN, 0, 6)], lambda context: BORN_TOKENS, min_support=1)
    assert table.end == {"助詞:に": [0, 1]}


def test_the_refiner_moves_the_end_where_the_labels_cut() -> None:
    refine = EdgeRefiner(EdgeTable(end={"助詞:に": [29, 30]}, min_support=20))
    assert refine(BORN, 0, 6, (0, 4), (4, 6)) == (0, 5)  # 1983年に -> 1983年


def test_the_refiner_keeps_edges_the_labels_keep_or_barely_saw() -> None:
    kept = EdgeRefiner(EdgeTable(end={"助詞:に": [10, 30]}, min_support=20))
    rare = EdgeRefiner(EdgeTable(end={"助詞:に": [5, 5]}, min_support=20))
    assert kept(BORN, 0, 6, (0, 4), (4, 6)) == (0, 6)
    assert rare(BORN, 0, 6, (0, 4), (4, 6)) == (0, 6)


def test_the_refiner_never_touches_tokens_without_japanese() -> None:
    refine = EdgeRefiner(EdgeTable(end={"補助記号:'": [100, 100], "助詞:s": [100, 100]}, min_support=1))
    text = "Luther's wife"
    assert refine(text, 0, 8, (0, 8), (0, 8)) == (0, 8)


def test_decode_refines_ranked_spans_and_merges_those_that_meet() -> None:
    offsets = np.array([[-1, -1], [0, 4], [4, 6], [6, 10]])
    start = np.array([0.0, 5.0, 1.0, 0.0])
    end = np.array([0.0, 1.0, 4.0, 3.0])
    window = WindowLogits(start, end, offsets, cls_index=0)
    refine = EdgeRefiner(EdgeTable(end={"助詞:に": [30, 30]}, min_support=20))
    plain = decode([window], [BORN], n_best=4, max_answer_length=5)
    edged = decode([window], [BORN], n_best=4, max_answer_length=5, refine=refine)
    assert [s.text for s in plain.answers][:2] == ["1983年に", "1983年に生まれた"]
    assert [s.text for s in edged.answers][:2] == ["1983年", "1983年に生まれた"]
    assert edged.answers[0].score == plain.answers[0].score  # edges move, scores do not
    assert len({(s.start, s.end) for s in edged.answers}) == len(edged.answers)


def test_a_table_round_trips_through_its_folder(tmp_path) -> None:
    table = EdgeTable(end={"助詞:に": [3, 4]}, start={"助詞:の": [1, 1]}, min_support=2)
    table.save(tmp_path)
    assert load_edge_table(tmp_path) == table
    assert load_edge_table(tmp_path / "missing") is None


def test_misses_are_classified_by_what_differs_at_the_edges() -> None:
    gold = [(0, 5)]  # 1983年
    assert classify_miss(BORN, (0, 5), gold) is None
    assert classify_miss(BORN, (0, 6), gold) == "trailing particle"  # 1983年に
    assert classify_miss(BORN, (0, 4), gold) == "missing counter or unit"  # 1983
    assert classify_miss(BORN, (6, 10), gold) == "different span"
    assert classify_miss(BORN, (-1, -1), gold) == "no answer"
    assert classify_miss(BORN, (0, 3), gold) == "edge inside a word"  # 198
    assert classify_miss("「源氏物語」を書いた", (0, 6), [(1, 5)]) is None  # the metric ignores brackets
    assert classify_miss("「源氏物語」を書いた", (0, 7), [(1, 5)]) == "trailing particle"
    assert classify_miss("作品『源氏物語』の", (2, 9), [(3, 7)]) == "trailing particle"  # 』の
    assert classify_miss("作品『源氏物語』の作者", (2, 11), [(3, 7)]) == "quotes and brackets"


def test_an_english_edge_token_is_not_cut_when_the_other_edge_is_japanese() -> None:
    text = "東京のTokyo-based"  # MeCab: 東京 | の | Tokyo | - | based; tokens 東京の | Tokyo-based
    refine = EdgeRefiner(EdgeTable(end={"名詞": [100, 100], "記号|名詞": [100, 100]}, min_support=1))
    assert refine(text, 0, 14, (0, 3), (3, 14)) == (0, 14)  # the span has Japanese, its last token not
    assert refine("東京のトウキョウ-based", 0, 14, (0, 3), (3, 14)) != (0, 14)  # a Japanese last token is cut


def test_a_damaged_table_is_a_one_line_error_naming_the_file(tmp_path) -> None:

    (tmp_path / "span_edges.json").write_text('{"end": {"助詞:に": "ab"}}', encoding="utf-8")
    with pytest.raises(KotaeError, match=r"span_edges\.json is damaged"):
        load_edge_table(tmp_path)
    (tmp_path / "span_edges.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KotaeError, match=r"span_edges\.json is damaged"):
        load_edge_table(tmp_path)


def test_the_shipped_table_moves_the_particle_edges() -> None:
    from kotae.reader_weights import WEIGHTS_DIR

    table = load_edge_table(WEIGHTS_DIR / "reader-e5-small-ja-en")
    assert table is not None and table.moving_keys() == 8
    assert table.should_cut("end", "助詞:に") > 0.99 and table.should_cut("end", "接尾辞") < 0.1


def test_open_reader_reads_with_the_folders_span_edges_and_settings(tmp_path) -> None:
    """One loader gives every reader its folder's table and saved settings, so no caller decodes at
    token edges by forgetting ``span_edges.json`` (kotae evaluate, kotae's reader, kotae eval, benches)."""
    import json

    from kotae.reader_training.data import QAExample
    from kotae.reader_training.evaluate import open_reader
    from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

    tokenizer = tiny_tokenizer([BORN, "いつ生まれた？"])
    tiny_reader(tokenizer, hidden=32, layers=1).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "reader_config.json").write_text(json.dumps({"max_length": 48, "stride": 16}))
    assert open_reader(str(tmp_path)).refine is None  # no table: edges stay at tokens
    (tmp_path / "span_edges.json").write_text(json.dumps({"end": {"助詞:に": [9, 10]}, "min_support": 1}))

    reader = open_reader(str(tmp_path), overrides={"stride": 8, "n_best": None})

    assert (reader.settings.max_length, reader.settings.stride, reader.settings.n_best) == (48, 8, 20)
    assert reader.refine is not None and reader.refine(BORN, 0, 6, BORN_TOKENS[0], BORN_TOKENS[1]) == (0, 5)
    example = QAExample(id="born", question="いつ生まれた？", context=BORN, answers=())
    spans = {(p.start, p.end) for p in reader.predict([example])}
    assert all(0 <= start <= end <= len(BORN) for start, end in spans)

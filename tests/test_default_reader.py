"""The shipped default reader: prepared from the repository's fp16 weights, it scores what its model
card says on fixed 100-question slices of both dev sets (within 0.5 F1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kotae.models import DEFAULT_READER, prepare
from kotae.reader_weights import WEIGHTS_DIR

CARD = WEIGHTS_DIR / DEFAULT_READER / "model_card.md"
SLICES = {"jaquad-dev": "jaquad/dev", "squad-dev": "squad-dev"}


def recorded_slice_scores() -> dict[str, tuple[float, float]]:
    """``{dev set: (EM, F1)}`` from the card's "first 100 questions" table."""
    rows = re.findall(r"^\| (\S+) \(first 100\) \| 100 \| ([\d.]+) \| ([\d.]+) \|$", CARD.read_text(), re.M)
    return {name: (float(em), float(f1)) for name, em, f1 in rows}


def test_the_card_records_both_slices() -> None:
    assert set(recorded_slice_scores()) == set(SLICES)


@pytest.mark.parametrize("name", sorted(SLICES))
def test_shipped_reader_scores_what_its_card_says(name: str, shared_data: Path) -> None:
    import torch

    from kotae.reader_training.evaluate import evaluate_folder

    torch.set_num_threads(2)
    folder, _ = prepare(DEFAULT_READER)
    assert (folder / "model_card.md").read_text() == CARD.read_text()
    report = evaluate_folder(str(folder), str(shared_data / SLICES[name]), limit=100)
    em, f1 = recorded_slice_scores()[name]
    assert report.scores["n"] == 100
    assert report.scores["f1"] == pytest.approx(f1, abs=0.5)
    assert report.scores["exact_match"] == pytest.approx(em, abs=1.0)


def test_haystack_reader_loads_the_prepared_folder() -> None:
    from haystack import Document
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader

    folder, _ = prepare(DEFAULT_READER)
    reader = TransformersExtractiveReader(model=str(folder), top_k=1)
    reader.warm_up()
    context = "富士山は標高3776メートルで、日本で最も高い山である。"
    answers = reader.run(query="富士山の標高は？", documents=[Document(content=context)])["answers"]
    assert answers[0].data and answers[0].data in context


def test_kotae_eval_reads_gold_contexts_with_the_span_edge_table() -> None:
    """``kotae eval``'s reader-alone columns are ``kotae evaluate``'s: the same decoder, span edges included
    (the tokenizer glues 年 and の into one token; the shipped table cuts the の)."""
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.eval_job import read_gold_contexts
    from kotae.pipeline.evaluation import EvalQuestion

    folder, _ = prepare(DEFAULT_READER)
    context = "はじめ流刑植民地とされた同地は、1851年の金鉱発見以来、一攫千金を夢見る多くの人々を惹き付けた。"
    question = EvalQuestion(
        id="q1",
        question="オーストラリアで初めて金鉱が発見されたのは何年のことですか。",
        answers=("1851年",),
        answer_starts=(context.index("1851年"),),
        context=context,
        document_id="d1",
    )
    config = load_pipeline_config("default", [f"reader.model={folder}", "reader.runtime=torch"])
    predictions, _ = read_gold_contexts(config, None, [question])
    assert predictions == {"q1": "1851年"}

"""The gain-curve simulation's pure parts (bench/feedback_gain_curve.py): held-out products never
leak into the questions users ask, the simulated user's verdicts, and the adapt config it trains."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from kotae.pipeline.feedback import squad_export
from kotae.reader_training.data import Answer, QAExample

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "feedback_gain_curve", ROOT / "bench" / "feedback_gain_curve.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _product(title: str, questions: int) -> dict:
    context = f"The {title} is blue and small."
    qas = [
        {
            "id": f"{title}-{i}",
            "question": f"What colour is the {title}? ({i})",
            "answers": [{"text": "blue", "answer_start": context.index("blue")}],
        }
        for i in range(questions)
    ]
    return {"title": title, "paragraphs": [{"context": context, "qas": qas}]}


def test_held_out_products_are_whole_and_never_asked() -> None:
    bench = _bench()
    document = {"data": [_product(f"p{i}", 3) for i in range(10)]}
    heldout, pool = bench.split_by_product(document, heldout_questions=5, seed=1)
    held_titles = {article["title"] for article in heldout["data"]}
    assert len(held_titles) == 2  # whole products until at least 5 questions
    assert {example.title for example in pool}.isdisjoint(held_titles)
    assert len(pool) == 30 - 6
    again, pool_again = bench.split_by_product(document, heldout_questions=5, seed=1)
    assert again == heldout and [e.id for e in pool_again] == [e.id for e in pool]


def test_simulated_user_confirms_right_answers_and_corrects_wrong_ones() -> None:
    bench = _bench()
    context = "The holder is not too big and not too small."
    example = QAExample(
        "q1",
        "What size is the holder?",
        context,
        (Answer("not too big", context.index("not too big")),),
        title="holder",
    )
    start = context.index("not too big")
    right = bench.simulated_label(example, (start, start + len("not too big")), "base")
    wrong = bench.simulated_label(example, (0, 3), "base")
    assert right.verdict == "correct" and right.corrected_start is None
    assert wrong.verdict == "wrong" and wrong.corrected_text == "not too big" and wrong.answer_text == "The"
    data, _, counts = squad_export([right, wrong])
    answers = [
        qa["answers"][0]["text"] for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]
    ]
    assert answers == ["not too big", "not too big"] and counts.exported == 2


def test_adapt_config_replays_the_base_data_without_amazon(tmp_path: Path) -> None:
    bench = _bench()
    config = bench.adapt_config("runs/base", tmp_path / "labels.json", tmp_path / "out", 0.02, 1.0)
    paths = [source["path"] for source in config["train_data"]]
    assert paths[0] == str(tmp_path / "labels.json") and config["train_data"][0]["weight"] == 3.0
    assert not any("amazon" in path for path in paths) and len(paths) == 4
    assert all(source["weight"] == 0.02 for source in config["train_data"][1:])
    assert (
        config["base_model"] == "runs/base" and config["dev_data"] == [] and config["num_train_epochs"] == 1.0
    )
    control = bench.adapt_config("runs/base", None, tmp_path / "out", 0.02, 1.0)
    assert len(control["train_data"]) == 3  # no labels: replay only


def test_a_folder_of_cached_results_refuses_other_settings_but_not_other_sizes() -> None:
    bench = _bench()
    saved = {"base": "runs/a", "heldout": 1000, "learning_rate": None, "seed": 7}
    assert bench.changed_settings(saved, {**saved, "sizes": [0, 5000]}) == []
    assert bench.changed_settings(saved, {**saved, "base": "runs/b", "learning_rate": 1e-4}) == [
        "base",
        "learning_rate",
    ]
    assert bench.changed_settings({}, {"base": "runs/b"}) == []  # a folder from before settings.json

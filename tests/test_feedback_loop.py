"""The whole feedback loop on a tiny model, over real HTTP and the real ``kotae`` command:
ask and post corrections to a running server, ``kotae feedback export`` with a held-out part,
``kotae train --config configs/train/adapt.yaml``, ``kotae evaluate`` before and after on the held-out
and the trained labels, then ``kotae ask --set reader.model=<adapted>`` (and back).

The tiny reader is untrained and the corpus has a handful of questions, so this proves the plumbing
(every step reads what the previous one wrote, and the adapted reader fits the labels it was given),
not that adapting helps on unseen questions; that needs a real reader and hours (README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from kotae.cli import app as cli_app
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.server import create_app
from kotae.pipeline.testing import ServedApp, TinySetup, build_tiny_setup
from kotae.reader_training.evaluate import evaluate_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
KOTAE = Path(sys.executable).parent / "kotae"

# question, the right answer (found in a retrieved passage), verdict
LABELS = [
    ("富士山の高さは？", "3776メートル", "wrong"),
    ("京都はいつ都になりましたか？", "794年", "wrong"),
    ("What is the capital of Japan?", "Tokyo", "wrong"),
    ("When did Tokyo become the capital?", "1868", "wrong"),
    ("What is the longest river in Japan?", "The Shinano River", "wrong"),
    ("Where does the Shinano River flow into?", "the Sea of Japan", "wrong"),
    ("富士山は何に登録されましたか？", "世界文化遺産", "wrong"),
    ("有名な寺は？", "金閣寺", "wrong"),
    ("How many people live in Tokyo?", "About 14 million", "wrong"),
    ("京都の人口は？", "", "no_answer"),
]


def _kotae(*args: str, cwd: Path) -> str:
    """Run the installed ``kotae`` command; fail with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [str(KOTAE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"kotae {' '.join(args)}\n{done.stderr[-3000:]}"
    return done.stdout


def _post_labels(url: str, setup: TinySetup) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for question, answer, verdict in LABELS:
            asked = client.post("/api/ask", json={"question": question, "top_k": 1}).json()
            shown = next(a for a in asked["answers"] if a["answer"] is not None)
            body: dict[str, Any] = {"question": question, "verdict": verdict}
            if verdict == "no_answer":
                body.update(passage_id=shown["passage_id"])
            else:
                passage = next(p for p in asked["passages"] if answer in p["text"])
                start = passage["text"].index(answer)
                body.update(
                    passage_id=passage["passage_id"],
                    document_id=passage["document_id"],
                    corrected_start=start,
                    corrected_end=start + len(answer),
                )
                if shown["passage_id"] == passage["passage_id"]:
                    body.update(answer_start=shown["passage_start"], answer_end=shown["passage_end"])
            response = client.post("/feedback", json=body)
            assert response.status_code == 201, response.text
            if verdict == "wrong":
                assert response.json()["corrected"] == answer


def _f1(report: str) -> float:
    return float(json.loads(report)["f1"])


def test_feedback_export_train_evaluate_switch(tmp_path: Path) -> None:
    setup = build_tiny_setup(tmp_path / "tiny")
    pipeline_config = CONFIGS / "pipeline" / "bm25.yaml"
    config = setup.config(pipeline_config)
    with ServedApp(create_app(config, answerer=QuestionAnswerer.from_config(config))) as server:
        _post_labels(server.url, setup)

    sets = [item for override in setup.overrides for item in ("--set", override)]
    listed = CliRunner().invoke(cli_app, ["feedback", "list", "--config", str(pipeline_config), *sets])
    assert listed.exit_code == 0, listed.output
    assert "correct 0, wrong 9, no_answer 1" in listed.stdout

    labels, heldout = tmp_path / "feedback" / "labels.json", tmp_path / "feedback" / "labels.heldout.json"
    exported = _kotae(
        "feedback", "export", "--config", str(pipeline_config), *sets,
        "--out", str(labels), "--holdout", "0.2",
        cwd=tmp_path,
    )  # fmt: skip
    assert "held out 2" in exported and "exported 8" in exported
    data = json.loads(labels.read_text("utf-8"))
    assert data["version"] == "v2.0"
    held = json.loads(heldout.read_text("utf-8"))
    assert sum(len(p["qas"]) for a in held["data"] for p in a["paragraphs"]) == 2

    # Replay data stands in for the reader's original training set.
    replay = tmp_path / "replay.json"
    context = setup.texts["tokyo.txt"]
    replay.write_text(
        json.dumps(
            {
                "version": "v2.0",
                "data": [
                    {
                        "title": "tokyo",
                        "paragraphs": [
                            {
                                "context": context,
                                "qas": [
                                    {
                                        "id": "replay-1",
                                        "question": "What is the capital of Japan?",
                                        "answers": [{"text": "Tokyo", "answer_start": 0}],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    adapted = tmp_path / "reader-adapted"
    trained = _kotae(
        "train", "--config", str(CONFIGS / "train" / "adapt.yaml"),
        "--set", f"base_model={setup.reader}",
        "--set", f"output_dir={adapted}",
        "--set", f"train_data=[{{path: {labels}, weight: 3.0}}, {{path: {replay}, weight: 0.5}}]",
        "--set", f"dev_data=[{{name: feedback-heldout, path: {heldout}}}, {{name: trained, path: {labels}}}]",
        "--set", "max_length=128", "--set", "stride=32", "--set", "max_steps=40",
        "--set", "batch_size=8", "--set", "learning_rate=0.003", "--set", "warmup_ratio=0.0",
        "--set", "freeze_word_embeddings=false", "--set", "progress=false", "--set", "torch_threads=2",
        cwd=tmp_path,
    )  # fmt: skip
    assert "dev feedback-heldout" in trained
    for name in ("README.md", "metrics.json", "reader_config.json", "config.json"):
        assert (adapted / name).is_file(), name

    # Before and after on the held-out labels (kotae evaluate); the adapted reader fits what it was
    # trained on (its dev score on the trained labels beats the base reader's).
    heldout_f1 = {
        name: _f1(_kotae("evaluate", "--model", str(model), "--data", str(heldout), "--json", cwd=tmp_path))
        for name, model in (("before", setup.reader), ("after", adapted))
    }
    assert set(heldout_f1) == {"before", "after"}
    after = json.loads((adapted / "metrics.json").read_text("utf-8"))["dev"]["trained"]["f1"]
    before = evaluate_folder(str(setup.reader), str(labels), overrides={"max_length": 128, "stride": 32})
    assert after > before.summary()["f1"], (after, before.summary())

    # Switch: one key (switching back is leaving it out: the same command without it).
    answered = _kotae(
        "ask", "--config", str(pipeline_config), *sets, "--set", f"reader.model={adapted}",
        "--json", "富士山の高さは？",
        cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(answered)["answers"], answered

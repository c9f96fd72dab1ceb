"""End to end: a tiny BERT built here learns a handful of English and Japanese questions through the
real training entry point, then answers them through the real evaluation code and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.reader_training.config import load_train_config
from kotae.reader_training.evaluate import evaluate_folder, load_reader
from kotae.reader_training.testing import tiny_reader, tiny_tokenizer
from kotae.reader_training.train import run_training

CONTEXTS = [
    "Alice met Bob in Paris on a rainy Tuesday in spring.",
    "The red fox jumped over the lazy dog near the old river bank.",
    "奈良は八世紀に日本の首都であった。東大寺には大仏がある。",
    "富士山は日本で一番高い山で、静岡県と山梨県にまたがる。",
]
QAS = [
    (0, "Where did Alice meet Bob?", "Paris"),
    (0, "Who met Bob?", "Alice"),
    (1, "What jumped over the dog?", "The red fox"),
    (2, "八世紀の日本の首都はどこ？", "奈良"),
    (2, "東大寺には何がある？", "大仏"),
    (3, "日本で一番高い山は？", "富士山"),
]


def squad_file(path: Path, unanswerable: bool = False) -> Path:
    paragraphs: list[dict[str, Any]] = []
    for number, (context_index, question, answer) in enumerate(QAS):
        context = CONTEXTS[context_index]
        answers = [{"text": answer, "answer_start": context.index(answer)}]
        paragraphs.append(
            {"context": context, "qas": [{"id": f"q{number}", "question": question, "answers": answers}]}
        )
    if unanswerable:
        paragraphs.append(
            {
                "context": CONTEXTS[0],
                "qas": [{"id": "none", "question": "Who met Dave?", "answers": [], "is_impossible": True}],
            }
        )
    path.write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}, ensure_ascii=False)
    )
    return path


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Any:
    """torch_threads / --threads set a process-wide value; give later tests the original back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reader")
    squad_file(root / "train.json")
    squad_file(root / "v2.json", unanswerable=True)
    tokenizer = tiny_tokenizer(CONTEXTS + [q for _, q, _ in QAS] + ["Who met Dave?"])
    tiny_reader(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root


def settings(root: Path, output: str, *extra: str) -> list[str]:
    return [
        f"base_model={root / 'base'}",
        f"output_dir={root / output}",
        f"train_data={root / 'train.json'}",
        f"dev_data=[{{path: {root / 'train.json'}, name: train}}]",
        "max_length=32",  # the longer contexts need two windows
        "stride=8",
        "max_question_length=12",
        "learning_rate=0.01",
        "warmup_ratio=0",
        "weight_decay=0",
        "batch_size=8",
        "max_steps=60",
        "logging_steps=5",
        "save_steps=10",
        "progress=false",
        "torch_threads=1",  # a tiny model; one thread avoids oversubscription on a shared CPU
        *extra,
    ]


def test_training_memorises_and_writes_a_model_folder(workspace: Path) -> None:
    config = load_train_config(None, settings(workspace, "run", "eval_steps=30"))
    outcome = run_training(config, log=lambda message: None)
    out = outcome.output_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "reader_config.json", "metrics.json"):
        assert (out / name).is_file(), name
    for name in ("README.md", "train_log.jsonl", "curves.png", "train_config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob("checkpoint-*"))  # removed once the model is saved

    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "dev" not in r]
    assert losses[0] > 3 * losses[-1], losses  # the loss falls
    assert [r["step"] for r in records if "dev" in r] == [30, 60]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["train"]["n"] == 6
    assert metrics["training"]["global_step"] == 60 and metrics["training"]["sequences_per_second"] > 0
    assert metrics["data"]["features"]["windows"] > 6  # some questions span two windows
    assert "| train | 6 |" in (out / "README.md").read_text()

    # labels and decoding agree: the model answers the questions it was trained on
    report = evaluate_folder(str(out), str(workspace / "train.json"))
    answers = {p.id: p.text for p in report.predictions}
    correct = sum(answers[f"q{i}"] == answer for i, (_, _, answer) in enumerate(QAS))
    assert correct >= 5, answers
    assert report.scores["n_ja"] == 3 and report.scores["n_en"] == 3
    assert report.scores["exact_match"] == metrics["dev"]["train"]["exact_match"]


def test_a_killed_run_resumes_from_its_checkpoint(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import TrainerCallback

    from kotae.reader_training.run_status import main as status_main

    class Kill(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 25:
                raise RuntimeError("killed")

    config = load_train_config(None, settings(workspace, "resumed", "max_steps=30"))
    with pytest.raises(RuntimeError, match="killed"):
        run_training(config, log=lambda message: None, callbacks=[Kill()])
    out = workspace / "resumed"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    capsys.readouterr()  # Trainer's own printing
    status_main([str(out)])  # where a stopped run stands, read from its files alone
    progress, header, _, *rows = capsys.readouterr().out.splitlines()
    assert progress == f"{out}: newest checkpoint checkpoint-20, step 20 of 30 (66.7 %); no snapshots"
    assert header == "| step | train loss |" and len(rows) == 1 and rows[0].startswith("| 2")

    with pytest.raises(KotaeError, match="--resume"):
        run_training(config, log=lambda message: None)  # will not overwrite a run silently

    outcome = run_training(config, resume=True, log=lambda message: None)
    assert outcome.metrics["training"]["resumed"] is True
    assert outcome.metrics["training"]["global_step"] == 30
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # the lines logged after checkpoint-20 by the killed run were dropped, so no step appears twice
    assert [r["step"] for r in records if "loss" in r] == [1, *range(5, 31, 5)]
    assert (out / "model.safetensors").is_file() and not list(out.glob("checkpoint-*"))
    capsys.readouterr()
    status_main([str(out)])
    assert capsys.readouterr().out.startswith(f"{out}: finished; no snapshots\n")

    # killed before its first checkpoint: --resume starts over in the same folder
    early = workspace / "early"
    early.mkdir()
    (early / "train_log.jsonl").write_text('{"step": 3, "loss": 9.0}\n')
    messages: list[str] = []
    again = run_training(
        load_train_config(None, settings(workspace, "early", "max_steps=3")), True, messages.append
    )
    assert again.metrics["training"]["global_step"] == 3 and again.metrics["training"]["resumed"] is False
    assert any("starting from step 0" in m for m in messages)
    assert '"loss": 9.0' not in (early / "train_log.jsonl").read_text()


def test_snapshots_keep_the_curve_and_average_into_a_reader(workspace: Path, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    from kotae.reader_training.snapshots import list_snapshots, main, materialise, snapshot_path

    extra = ("max_steps=30", "snapshot_steps=10", "freeze_word_embeddings=true")
    out = run_training(
        load_train_config(None, settings(workspace, "snapped", *extra)), log=lambda m: None
    ).output_dir
    assert list(list_snapshots(out)) == [10, 20, 30]  # kept when the checkpoints are removed
    trained = load_file(str(out / "model.safetensors"))
    last = load_file(str(snapshot_path(out, 30)))
    assert "bert.embeddings.word_embeddings.weight" not in last  # frozen: not in a snapshot
    assert "qa_outputs.weight" in last and all(np.array_equal(trained[k], v) for k, v in last.items())

    # one snapshot laid over a frame is that step's reader; here the run's own final reader
    one = materialise(out, [30], out, tmp_path / "step-30")
    scores = [evaluate_folder(str(folder), str(workspace / "train.json")).scores for folder in (out, one)]
    assert [(s["exact_match"], s["f1"]) for s in scores[:1]] == [
        (s["exact_match"], s["f1"]) for s in scores[1:]
    ]

    main([str(out), "--frame", str(out), "--steps", "10", "20", "--out", str(tmp_path / "mean")])
    mean = load_file(str(tmp_path / "mean" / "model.safetensors"))
    first, second = (load_file(str(snapshot_path(out, step))) for step in (10, 20))
    assert all(np.allclose(mean[k], (first[k] + second[k]) / 2) for k in first)
    assert np.array_equal(
        mean["bert.embeddings.word_embeddings.weight"], trained["bert.embeddings.word_embeddings.weight"]
    )
    assert (tmp_path / "mean" / "reader_config.json").is_file() and not (
        tmp_path / "mean" / "README.md"
    ).exists()
    with pytest.raises(SystemExit, match=r"--steps 15: no such snapshot \(have \[10, 20, 30\]\)"):
        main([str(out), "--frame", str(out), "--steps", "15", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--last 4: the run has only 3"):
        main([str(out), "--frame", str(out), "--last", "4", "--out", str(tmp_path / "x")])


def test_cli_train_and_evaluate(workspace: Path) -> None:
    config = workspace / "cli.yaml"
    config.write_text(f"train_data: {workspace / 'train.json'}\n")
    runner = CliRunner()
    overrides = [arg for item in settings(workspace, "cli-run", "max_steps=20") for arg in ("--set", item)]
    result = runner.invoke(app, ["train", "--config", str(config), *overrides])
    assert result.exit_code == 0, result.output
    assert "dev train: EM" in result.stdout
    card = (workspace / "cli-run" / "README.md").read_text()
    assert f"kotae train --config {config} --set base_model=" in card
    assert load_train_config(workspace / "cli-run" / "train_config.yaml").max_steps == 20

    result = runner.invoke(
        app,
        ["evaluate", "--model", str(workspace / "cli-run"), "--data", str(workspace / "v2.json"), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 7
    for key in ("exact_match", "f1", "examples_per_second", "has_ans_f1", "no_ans_exact_match", "has_ans_n"):
        assert key in summary

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(workspace / "cli-run"),
            "--data",
            str(workspace / "train.json"),
            "--limit",
            "2",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "n 2" in result.stdout and "examples/s" in result.stdout

    result = runner.invoke(app, ["train", "--config", str(config), "--set", "learning_rat=1"])
    assert isinstance(result.exception, KotaeError) and "learning_rat" in str(result.exception)


def test_slow_tokenizer_is_a_clear_error(workspace: Path, tmp_path: Path) -> None:
    from transformers import ByT5Tokenizer

    folder = tmp_path / "slow-model"
    tokenizer = ByT5Tokenizer()
    assert not tokenizer.is_fast
    tiny_reader(tiny_tokenizer(["a"])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(KotaeError, match=r"slow-model.*fast tokenizer"):
        load_reader(str(folder))
    config = load_train_config(None, [*settings(workspace, "slow"), f"base_model={folder}"])
    with pytest.raises(KotaeError, match="slow-model"):
        run_training(config, log=lambda message: None)


def test_run_qa_names_and_trainer_args_train_a_hub_ready_folder(workspace: Path, tmp_path: Path) -> None:
    """A config written with run_qa.py's argument names and a ``trainer_args`` section trains; the
    folder's card is README.md with Hub metadata, and all_results.json holds run_qa's figures."""
    import yaml

    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "run_qa.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(workspace / "base"),
                "output_dir": str(tmp_path / "out"),
                "train_file": "../train.json",  # relative to this file, not to the current folder
                "validation_file": "../train.json",
                "max_seq_length": 32,
                "doc_stride": 8,
                "max_question_length": 12,
                "n_best_size": 5,
                "per_device_train_batch_size": 8,
                "learning_rate": 0.01,
                "warmup_ratio": 0,
                "weight_decay": 0,
                "max_steps": 10,
                "logging_steps": 2,
                "save_steps": 10,
                "disable_tqdm": True,
                "torch_threads": 1,
                "trainer_args": {
                    "lr_scheduler_type": "constant",
                    "optim": "adafactor",
                    "gradient_checkpointing": True,
                    "report_to": "none",
                },
            }
        )
    )
    (tmp_path / "train.json").write_text((workspace / "train.json").read_text())
    loaded = load_train_config(config, ["doc_stride=6", "n_best_size=7"])
    assert (loaded.stride, loaded.n_best, loaded.max_length, loaded.batch_size) == (6, 7, 32, 8)
    assert loaded.progress is False and loaded.train_data[0].path == str(tmp_path / "train.json")

    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    rates = {r["learning_rate"] for r in records if "learning_rate" in r}
    assert rates == {0.01}  # the constant scheduler from trainer_args, no warmup or decay

    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and not (out / "model_card.md").exists()
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata["pipeline_tag"] == "question-answering"
    assert metadata["language"] == ["ja", "en"] and metadata["metrics"] == ["exact_match", "f1"]
    assert {"license", "datasets"} <= set(metadata) and "base_model" not in metadata  # a local base
    assert metadata["model-index"][0]["results"][0]["metrics"][1]["type"] == "f1"
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_exact_match", "eval_f1", "eval_samples", "train_loss", "epoch"} <= set(results)
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["trainer_args"]["optim"] == "adafactor"
    assert load_train_config(out / "train_config.yaml").train_data[0].path == str(tmp_path / "train.json")


def test_data_paths_are_checked_before_the_model_loads(workspace: Path, tmp_path: Path) -> None:
    """A missing data path fails first, naming its key, relative to the config file."""
    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "c.yaml"
    config.write_text(
        "base_model: no-such-model-alias\n"  # loading it would fail with another message
        f"train_data: {workspace / 'train.json'}\n"
        "dev_data:\n  - path: ../data/jaquad/dev\n"
    )
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    message = str(result.exception)
    assert isinstance(result.exception, KotaeError) and "\n" not in message
    assert message.startswith("dev_data[0].path: data not found: ")
    assert str(tmp_path / "data" / "jaquad" / "dev") in message  # beside the config, not the cwd
    hub = load_train_config(config, ["dev_data=[{path: 'squad:@validation'}]"])
    with pytest.raises(KotaeError, match=r"^dev_data\[0\].path: 'squad:@validation': .*NAME\[:CONFIG\]"):
        run_training(hub, log=lambda message: None)


def test_card_metadata_names_the_hub_base_and_data() -> None:
    from kotae.reader_training.report import all_results, card_metadata

    metrics: dict[str, Any] = {
        "output_dir": "runs/reader-ja",
        "base_model": "multilingual-e5-small",
        "hyperparameters": {"language": "ja"},
        "train_data": [{"path": "/data/jaquad/train"}, {"path": "shunk031/JGLUE:JSQuAD@train"}],
        "dev": {
            "jaquad-dev": {"exact_match": 63.19, "f1": 75.744, "n": 3939},
            "squad": {"exact_match": 1.0, "f1": 2.0, "n": 3},
        },
        "training": {"epochs": 2.0, "train_loss": 1.5, "train_seconds": 10.0, "sequences_per_second": 5.0},
        "data": {"features": {"windows_used": 50}},
    }
    metadata = card_metadata(metrics)
    assert metadata["base_model"] == "intfloat/multilingual-e5-small" and metadata["license"] == "mit"
    assert metadata["language"] == ["ja"] and metadata["pipeline_tag"] == "question-answering"
    assert metadata["datasets"] == ["jaquad/train", "shunk031/JGLUE"]
    result = metadata["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "jaquad-dev" and result["metrics"][1] == {
        "type": "f1",
        "value": 75.74,
    }
    results = all_results(metrics)
    assert results["eval_f1"] == 75.744 and results["eval_squad_f1"] == 2.0 and results["train_samples"] == 50


def test_average_tensors_refuses_states_that_do_not_match() -> None:
    import numpy as np

    from kotae.reader_training.snapshots import average_tensors

    half = np.array([1.0, 2.0], dtype=np.float16)
    assert average_tensors([{"w": half}, {"w": half * 3}])["w"].dtype == np.float16
    with pytest.raises(ValueError, match=r"state 1 has other tensors than state 0: \['b'\]"):
        average_tensors([{"a": half}, {"a": half, "b": half}])
    with pytest.raises(ValueError, match="tensor a: shapes differ"):
        average_tensors([{"a": half}, {"a": half[:1]}])


def test_the_curve_has_a_row_per_dev_check_with_the_mean_loss_since_the_last() -> None:
    from kotae.reader_training.run_status import curve_rows, curve_table

    records = [
        {"step": 10, "loss": 3.0},
        {"step": 20, "loss": 2.0},
        {"step": 20, "dev": "ja", "exact_match": 50.0, "f1": 70.0, "n": 300},
        {"step": 20, "dev": "en", "exact_match": 40.0, "f1": 60.0, "n": 300},
        {"step": 30, "loss": 1.0},
        {"step": 40, "dev": "ja", "exact_match": 55.0, "f1": 72.5, "n": 300},
    ]
    rows = curve_rows(records)
    assert [(r.step, r.loss) for r in rows] == [(20, 2.5), (40, 1.0)]
    assert rows[1].dev == {"ja": (55.0, 72.5)}  # a dev set may be missing from a check
    assert curve_table(rows).splitlines() == [
        "| step | train loss | ja EM / F1 | en EM / F1 |",
        "|---:|---:|---:|---:|",
        "| 20 | 2.500 | 50.00 / 70.00 | 40.00 / 60.00 |",
        "| 40 | 1.000 | 55.00 / 72.50 |  |",
    ]
    assert curve_rows([{"step": 40, "loss": 1.0}, *records[:4]])[-1] == type(rows[0])(40, 1.0, {})
    assert curve_rows([]) == []

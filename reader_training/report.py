"""What a training run leaves next to its model: the JSONL log, the curves, the card, the metrics.

``train_log.jsonl`` holds one JSON object per line: training records (``step``, ``epoch``, ``loss``,
``learning_rate``, ...) and dev records (``step``, ``dev``: set name, ``exact_match``, ``f1``, ``n``).
``curves.png`` plots loss and dev F1 against the step. ``README.md`` (the model card, with the
Hugging Face Hub's YAML metadata on top: language, license, datasets, metrics, base_model,
pipeline_tag and a model-index of the dev scores) and ``metrics.json`` describe the data,
hyperparameters, dev scores, wall time, sequences/s and hardware; ``all_results.json`` holds the
flat results under run_qa.py's names (``eval_exact_match``, ``eval_f1``, ``train_loss``, ...).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"
"""The model card's name in a trained folder: the Hub's convention, so the folder uploads as it is."""

KNOWN_BASES: dict[str, tuple[str, str]] = {
    "multilingual-e5-small": ("intfloat/multilingual-e5-small", "mit"),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
}
"""kotae's model aliases -> (Hub id, license) of the model they are prepared from."""


class TrainLog:
    """Append-only JSONL log; on resume, lines from beyond the resumed step are dropped first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        self.path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
        )

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        result = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    result.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill mid-write
                    continue
        return result


def plot_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss (left axis) and dev F1 per dev set (right axis) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(r["step"], r["loss"]) for r in records if "loss" in r and "dev" not in r]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    if losses:
        loss_axis.plot([s for s, _ in losses], [v for _, v in losses], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    loss_axis.set_title("reader training: loss and dev F1")
    dev_names = sorted({str(r["dev"]) for r in records if "dev" in r})
    if dev_names:
        f1_axis = loss_axis.twinx()
        for number, name in enumerate(dev_names, start=1):
            points = [(r["step"], r["f1"]) for r in records if r.get("dev") == name]
            f1_axis.plot(
                [s for s, _ in points],
                [v for _, v in points],
                marker="o",
                color=f"C{number}",
                label=f"dev F1 {name}",
            )
        f1_axis.set_ylabel("dev F1")
        f1_axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def hardware() -> dict[str, Any]:
    """CPU/GPU description for the card."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _scores_table(dev: dict[str, dict[str, Any]]) -> str:
    if not dev:
        return "No dev set was configured.\n"
    lines = ["| dev set | n | EM | F1 |", "|---|---:|---:|---:|"]
    for name, scores in dev.items():
        lines.append(f"| {name} | {scores['n']} | {scores['exact_match']:.2f} | {scores['f1']:.2f} |")
    return "\n".join(lines) + "\n"


def _dataset_name(path: str) -> str:
    """A Hub dataset id (``shunk031/JGLUE:JSQuAD@validation`` -> ``shunk031/JGLUE``) or a local
    set's last two path parts (``/data/jaquad/train`` -> ``jaquad/train``)."""
    local = Path(path.rstrip("/")).expanduser()
    if path.startswith(("/", ".", "~")) or path.endswith((".json", ".jsonl")) or local.exists():
        name = local.stem if local.suffix in (".json", ".jsonl") else local.name
        return f"{local.parent.name}/{name}".lstrip("/")
    return path.partition("@")[0].partition(":")[0]


def card_metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    """The Hub's model-card metadata for a run: language, license, datasets, metrics, base_model,
    pipeline_tag and a model-index with each dev set's EM and F1."""
    language = metrics["hyperparameters"].get("language", "auto")
    base = str(metrics["base_model"])
    hub_base, license_name = KNOWN_BASES.get(base, (base, "other"))
    datasets = list(dict.fromkeys(_dataset_name(str(s["path"])) for s in metrics.get("train_data", [])))
    metadata: dict[str, Any] = {
        "language": ["ja", "en"] if language == "auto" else [language],
        "license": license_name,
        "library_name": "transformers",
        "pipeline_tag": "question-answering",
        "tags": ["kotae", "extractive-qa"],
        "datasets": datasets,
        "metrics": ["exact_match", "f1"],
    }
    if not Path(hub_base).expanduser().is_absolute():  # a local folder is no Hub id
        metadata["base_model"] = hub_base
    results = [
        {
            "task": {"type": "question-answering", "name": "Question Answering"},
            "dataset": {"name": name, "type": name},
            "metrics": [
                {"type": "exact_match", "value": round(float(scores["exact_match"]), 2)},
                {"type": "f1", "value": round(float(scores["f1"]), 2)},
            ],
        }
        for name, scores in metrics.get("dev", {}).items()
    ]
    if results:
        metadata["model-index"] = [{"name": Path(str(metrics["output_dir"])).name, "results": results}]
    return metadata


def all_results(metrics: dict[str, Any]) -> dict[str, Any]:
    """run_qa.py's ``all_results.json``: flat ``eval_*`` (the first dev set; others prefixed with
    their name) and ``train_*`` figures."""
    training = metrics["training"]
    results: dict[str, Any] = {
        "epoch": training["epochs"],
        "train_loss": training["train_loss"],
        "train_runtime": training["train_seconds"],
        "train_samples_per_second": training["sequences_per_second"],
        "train_samples": metrics["data"]["features"].get("windows_used"),
    }
    for number, (name, scores) in enumerate(metrics.get("dev", {}).items()):
        prefix = "eval" if number == 0 else f"eval_{name}"
        results |= {
            f"{prefix}_exact_match": scores["exact_match"],
            f"{prefix}_f1": scores["f1"],
            f"{prefix}_samples": scores["n"],
        }
    return results


def model_card(metrics: dict[str, Any]) -> str:
    """Markdown card (``README.md``) from the same dictionary that goes into metrics.json, with
    the Hub's YAML metadata (:func:`card_metadata`) on top."""
    front = yaml.safe_dump(card_metadata(metrics), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{model_card_body(metrics)}"


def model_card_body(metrics: dict[str, Any]) -> str:
    """The card's Markdown: dev scores, data, training, hyperparameters, files, how to re-run."""
    hyper = metrics["hyperparameters"]
    data_lines = "\n".join(f"- {line}" for line in metrics["data"]["train_reports"])
    dev_lines = "\n".join(f"- {line}" for line in metrics["data"]["dev_reports"]) or "- (none)"
    hyper_lines = "\n".join(f"| {k} | {v} |" for k, v in hyper.items())
    training = metrics["training"]
    return f"""# Extractive QA reader: {Path(metrics["output_dir"]).name}

Fine-tuned by `kotae train` from **{metrics["base_model"]}** to find answer spans in a context
(start/end logits, decoded by `kotae.reader_training.decode`). Scores use `kotae.reader_training.metrics`:
official SQuAD EM/F1 for English, character-level EM/F1 for Japanese (language: {hyper.get("language")}).

## Dev scores

{_scores_table(metrics["dev"])}
## Data

Training sets:
{data_lines}

Windows: {json.dumps(metrics["data"]["features"])}

Dev sets:
{dev_lines}

## Training

- steps: {training["global_step"]}, epochs: {training["epochs"]:.2f}
- wall time: {training["wall_seconds"]:.0f} s, {training["sequences_per_second"]:.2f} sequences/s
- final train loss: {training.get("final_loss")}
- resumed from a checkpoint: {training["resumed"]}
- hardware: {json.dumps(metrics["hardware"])}

## Hyperparameters

| key | value |
|---|---|
{hyper_lines}

## Files

`config.json`, weights and tokenizer (load with `AutoModelForQuestionAnswering`), `reader_config.json`
(windowing and decoding settings), `train_config.yaml` (the full training configuration),
`metrics.json`, `all_results.json`, `train_log.jsonl`, `curves.png`.

## Reproduce

```
{metrics.get("command") or "kotae train --config train_config.yaml --set output_dir=<new folder>"}
```
"""

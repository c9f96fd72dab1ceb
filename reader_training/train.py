"""Fine-tune an encoder into an extractive reader: the shell behind ``kotae train``.

Loads and validates the data (:mod:`kotae.reader_training.data`), windows and labels it
(:mod:`kotae.reader_training.features`), trains with transformers' ``Trainer`` (dynamic padding,
length-grouped batches, bf16/fp16 on a GPU and bf16 on a CPU that has it natively, checkpoints
every ``save_steps``), scores the dev sets with the evaluation code
(:mod:`kotae.reader_training.evaluate`) and writes a model folder: ``save_pretrained`` weights +
tokenizer, ``reader_config.json``, ``span_edges.json`` (where an answer edge falls inside a Japanese
token, learnt from the training labels), ``metrics.json``,
``all_results.json``, the card ``README.md`` (Hub metadata on top), ``train_log.jsonl`` and
``curves.png``; with ``snapshot_steps``, the trained tensors every N steps in ``snapshots/``
(:mod:`kotae.reader_training.snapshots`: the curve and checkpoint averaging afterwards). Every
data source is checked before a model is loaded; an error names its key
(``train_data[0].path: data not found: ...``).

A run killed at any point continues from its last checkpoint with ``resume=True`` (or starts
over in the same folder when it was killed before its first checkpoint).

Example::

    config = load_train_config("configs/train/jaquad-small.yaml", ["max_steps=20"])
    outcome = run_training(config)
    print(outcome.metrics["dev"])
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kotae.errors import KotaeError
from kotae.progress import stderr_is_terminal
from kotae.reader_training.config import DevSource, TrainConfig
from kotae.reader_training.data import LoadResult, QAExample, check_source, load_examples, subsample
from kotae.reader_training.edges import EdgeRefiner, EdgeTable, learn_from_examples
from kotae.reader_training.evaluate import (
    READER_SETTINGS,
    DecodeSettings,
    resolve_reference,
)
from kotae.reader_training.features import prepare_train_features, require_fast_tokenizer
from kotae.reader_training.report import CARD_FILE, TrainLog, all_results, hardware, model_card, plot_curves

if TYPE_CHECKING:
    from kotae.reader_training.callbacks import StepClock

Log = Callable[[str], None]


@dataclass
class TrainOutcome:
    output_dir: Path
    metrics: dict[str, Any]


def freeze(model: Any, word_embeddings: bool, layers: int) -> dict[str, int]:
    """Stop gradients for the word embeddings and/or the lowest ``layers`` encoder layers."""
    if word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if layers:
        base = getattr(model, model.base_model_prefix, model)
        encoder = getattr(base, "encoder", None)
        stack = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        if stack is None:
            raise KotaeError(f"freeze_layers: cannot find the encoder layers of {type(model).__name__}")
        if layers > len(stack):
            raise KotaeError(f"freeze_layers = {layers} but the model has only {len(stack)} layers")
        for layer in list(stack)[:layers]:
            layer.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total}


def check_data(config: TrainConfig) -> None:
    """Every training and dev source exists (or is a well-formed hub name); the first that does
    not fails in one line naming its key, e.g. ``train_data[1].path: data not found: ...``."""
    paths = {"train_data": [s.path for s in config.train_data], "dev_data": [s.path for s in config.dev_data]}
    for key, sources in paths.items():
        for number, path in enumerate(sources):
            with _naming(f"{key}[{number}].path"):
                check_source(path)


@contextmanager
def _naming(key: str) -> Iterator[None]:
    """Prefix a KotaeError raised inside the block with the config key it concerns."""
    try:
        yield
    except KotaeError as error:
        if str(error).startswith(key):
            raise
        raise KotaeError(f"{key}: {error}") from None


def load_training_examples(config: TrainConfig, log: Log) -> tuple[list[QAExample], list[str]]:
    """All training sets, validated, capped and weighted, in config order."""
    examples: list[QAExample] = []
    reports: list[str] = []
    for number, source in enumerate(config.train_data):
        with _naming(f"train_data[{number}].path"):
            loaded = load_examples(source.path, source.max_examples)
        weighted = subsample(loaded.examples, source.weight, config.seed + number)
        line = loaded.report.summary()
        if source.weight != 1.0:
            line += f"; weight {source.weight} -> {len(weighted)} questions"
        log(line)
        reports.append(line)
        examples.extend(weighted)
    if not any(e.answers for e in examples):
        raise KotaeError("train_data: no answerable questions left to train on")
    return examples, reports


def load_dev_sets(sources: Sequence[DevSource], log: Log) -> tuple[dict[str, LoadResult], list[str]]:
    sets: dict[str, LoadResult] = {}
    reports: list[str] = []
    for number, source in enumerate(sources):
        with _naming(f"dev_data[{number}].path"):
            loaded = load_examples(source.path, source.max_examples)
        line = f"dev {source.label}: {loaded.report.summary()}"
        log(line)
        reports.append(line)
        sets[source.label] = loaded
    return sets, reports


def training_windows(
    config: TrainConfig, tokenizer: Any, examples: list[QAExample], log: Callable[[str], None]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The training windows ``kotae train`` (and the device bundle) learns from: window and label every
    example, keep at most ``max_train_windows``; returns the columns and their counts."""
    features = prepare_train_features(
        tokenizer,
        examples,
        config.max_length,
        config.stride,
        config.max_question_length,
        config.negative_window_ratio,
        config.seed,
    )
    columns = cap_windows(features.columns, config.max_train_windows, config.seed)
    stats = features.stats.as_dict() | {"windows_used": len(columns["input_ids"])}
    log(f"{len(examples)} questions -> windows {stats}")
    return columns, stats


def cap_windows(columns: dict[str, list[Any]], limit: int | None, seed: int) -> dict[str, list[Any]]:
    """A seeded random subset of at most ``limit`` windows, in their original order."""
    count = len(columns["input_ids"])
    if limit is None or count <= limit:
        return columns
    keep = sorted(random.Random(seed).sample(range(count), limit))
    return {key: [values[i] for i in keep] for key, values in columns.items()}


def _precision(config: TrainConfig) -> tuple[bool, bool]:
    """(bf16, fp16) for the Trainer. ``auto``: bf16 on a GPU that has it, else fp16 on a GPU; on a
    CPU bf16 where it is native (:func:`kotae.cpu_features.native_bf16`), else fp32. An explicit ``bf16`` on a
    CPU without native bf16 is kept, with a warning on stderr."""
    import torch

    from kotae.cpu_features import cpu_flags, native_bf16

    cuda = torch.cuda.is_available()
    choice = config.precision
    native_cpu_bf16 = not cuda and native_bf16(cpu_flags())
    if choice == "auto":
        if cuda and torch.cuda.is_bf16_supported():
            choice = "bf16"
        elif cuda:
            choice = "fp16"
        else:
            choice = "bf16" if native_cpu_bf16 else "fp32"
    if choice == "fp16" and not cuda:
        raise KotaeError("precision = 'fp16' needs a CUDA GPU; use 'fp32' or 'bf16' on a CPU")
    if choice == "bf16" and not cuda and not native_cpu_bf16:
        print(
            "warning: precision = 'bf16' on a CPU without native bfloat16 (AVX-512 BF16 or AMX) is emulated "
            "and much slower than fp32 (14x on an AVX2 CPU); use precision: auto or fp32",
            file=sys.stderr,
        )
    return choice == "bf16", choice == "fp16"


def _checkpoint_step(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text())["global_step"])
    except (OSError, KeyError, ValueError):
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _check_output_dir(output: Path, resume: bool) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if resume:
        # No checkpoint yet (killed before the first save_steps): start over in the same folder.
        return get_last_checkpoint(str(output)) if output.is_dir() else None
    if output.exists() and any(output.iterdir()):
        raise KotaeError(
            f"output_dir {output} is not empty; continue that run with --resume, delete it, "
            "or choose another with --set output_dir=..."
        )
    return None


def training_arguments(config: TrainConfig, output: Path) -> Any:
    """transformers' ``TrainingArguments`` for the config: its hyperparameters, checkpoints every
    ``save_steps`` in ``output``, length-grouped batches, no evaluation inside Trainer (kotae's own
    dev evaluation runs from a callback), then the config's ``trainer_args`` (which may replace
    kotae's defaults such as ``report_to: none``, never the values set from kotae's own keys)."""
    import torch
    from transformers import TrainingArguments

    bf16, fp16 = _precision(config)
    settings: dict[str, Any] = dict(
        output_dir=str(output),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=not (config.progress and stderr_is_terminal()),  # in a log: callbacks.ProgressLog
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU without it
    )
    return TrainingArguments(**(settings | config.trainer_args))


def portable_config(config: TrainConfig) -> dict[str, Any]:
    """The config as saved beside the model, local data paths made absolute so that it reads the
    same data when loaded from the output folder."""
    dumped = config.model_dump(mode="json")
    for key in ("train_data", "dev_data"):
        for source in dumped[key]:
            path = Path(source["path"]).expanduser()
            if path.exists():
                source["path"] = str(path.resolve())
    return dumped


def write_run_files(config: TrainConfig, output: Path, metrics: dict[str, Any], train_log: TrainLog) -> None:
    """What a finished run leaves beside its model: config, metrics, card, curves (checkpoints go
    unless ``keep_checkpoints``)."""
    (output / "train_config.yaml").write_text(
        yaml.safe_dump(portable_config(config), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    (output / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (output / "all_results.json").write_text(
        json.dumps(all_results(metrics), indent=2) + "\n", encoding="utf-8"
    )
    (output / CARD_FILE).write_text(model_card(metrics), encoding="utf-8")
    plot_curves(train_log.records(), output / "curves.png")
    if not config.keep_checkpoints:
        for folder in output.glob("checkpoint-*"):
            shutil.rmtree(folder, ignore_errors=True)


def run_training(
    config: TrainConfig,
    resume: bool = False,
    log: Log = print,
    callbacks: Sequence[Any] = (),
    command: str | None = None,
) -> TrainOutcome:
    """Train, evaluate and save one reader as configured; see the module docstring.

    ``callbacks`` are extra ``TrainerCallback`` objects; ``command`` (the command line that started
    the run) is recorded in the card for re-running.
    """
    from transformers import set_seed

    from kotae.reader_training.callbacks import (
        DevCheck,
        DevCheckEvery,
        ProgressLog,
        SnapshotEvery,
        StepClock,
        TrainLogWriter,
    )

    output = config.output_path
    checkpoint = _check_output_dir(output, resume)
    _set_threads(config.torch_threads)
    set_seed(config.seed)
    started = time.perf_counter()

    check_data(config)  # a wrong path fails here, not after the model has loaded
    examples, train_reports = load_training_examples(config, log)
    dev_sets, dev_reports = load_dev_sets(config.dev_data, log)
    tokenizer, model, parameters = load_base_model(config, log)
    columns, stats = training_windows(config, tokenizer, examples, log)
    edge_table = learn_from_examples(examples, tokenizer)
    settings = DecodeSettings.from_train_config(config.model_dump())
    train_log = _open_train_log(output, checkpoint, resume, log)

    dev_check = DevCheck(
        dev_sets, tokenizer, settings, config.language, EdgeRefiner(edge_table), train_log, log
    )
    clock = StepClock()
    trainer = _trainer(
        config,
        model,
        tokenizer,
        columns,
        [
            TrainLogWriter(train_log),
            DevCheckEvery(dev_check, config.eval_steps),
            SnapshotEvery(output, config.snapshot_steps),
            clock,
            ProgressLog(log, config.progress),
            *callbacks,
        ],
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    in_loop_eval_seconds = dev_check.seconds
    dev_scores = dev_check(trainer.model, trainer.state.global_step)

    save_reader(trainer, tokenizer, settings, edge_table, output)
    metrics: dict[str, Any] = {
        "output_dir": str(output),
        "base_model": config.base_model,
        "dev": dev_scores,
        "data": {
            "train_reports": train_reports,
            "dev_reports": dev_reports,
            "train_questions": len(examples),
            "features": stats,
        },
        "hyperparameters": config.model_dump(exclude={"train_data", "dev_data", "output_dir", "base_model"}),
        "train_data": [s.model_dump() for s in config.train_data],
        "dev_data": [s.model_dump() for s in config.dev_data],
        "training": _training_figures(
            config, trainer.state, result, clock, in_loop_eval_seconds, started, train_log
        )
        | {"resumed": checkpoint is not None}
        | parameters,
        "hardware": hardware(),
        "command": command,
    }
    write_run_files(config, output, metrics, train_log)
    log(f"saved reader to {output} ({metrics['training']['wall_seconds']:.0f} s)")
    return TrainOutcome(output, metrics)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def load_base_model(config: TrainConfig, log: Log) -> tuple[Any, Any, dict[str, int]]:
    """The base model's fast tokenizer and its QA model, frozen as configured, and the parameter
    counts; logs where the base came from."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    base_folder = resolve_reference(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_folder, trust_remote_code=False)
    require_fast_tokenizer(tokenizer, config.base_model)
    model = AutoModelForQuestionAnswering.from_pretrained(
        base_folder, use_safetensors=True, trust_remote_code=False
    )
    parameters = freeze(model, config.freeze_word_embeddings, config.freeze_layers)
    log(f"base model {config.base_model} ({base_folder}): {parameters}")
    return tokenizer, model, parameters


def _open_train_log(output: Path, checkpoint: str | None, resume: bool, log: Log) -> TrainLog:
    """The run's ``train_log.jsonl``, cut back to the checkpoint the run resumes from (to nothing when
    ``--resume`` finds no checkpoint), so that no step is logged twice."""
    train_log = TrainLog(output / "train_log.jsonl")
    if checkpoint is not None:
        train_log.truncate_after(_checkpoint_step(checkpoint))
        log(f"resuming from {checkpoint}")
    elif resume:
        train_log.truncate_after(0)
        log(f"--resume: no checkpoint in {output} yet; starting from step 0")
    return train_log


def _trainer(
    config: TrainConfig, model: Any, tokenizer: Any, columns: dict[str, list[Any]], callbacks: list[Any]
) -> Any:
    """transformers' ``Trainer`` over the training windows, each batch padded to its longest window
    (the ``length`` column only groups windows by length)."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer

    collator = DataCollatorWithPadding(tokenizer)

    def collate(rows: list[dict[str, Any]]) -> Any:
        return collator([{k: v for k, v in row.items() if k != "length"} for row in rows])

    return Trainer(
        model=model,
        args=training_arguments(config, config.output_path),
        train_dataset=datasets.Dataset.from_dict(columns),
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def save_reader(
    trainer: Any, tokenizer: Any, settings: DecodeSettings, edge_table: EdgeTable, output: Path
) -> None:
    """The trained reader as a model folder: weights, tokenizer, ``reader_config.json`` (the
    windowing and decoding it was checked with) and ``span_edges.json``."""
    trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))
    (output / READER_SETTINGS).write_text(json.dumps(settings.as_dict(), indent=2) + "\n", encoding="utf-8")
    edge_table.save(output)


def _training_figures(
    config: TrainConfig,
    state: Any,
    result: Any,
    clock: StepClock,
    in_loop_eval_seconds: float,
    started: float,
    train_log: TrainLog,
) -> dict[str, Any]:
    """Steps, epochs, losses and speed of the run; sequences/s counts the steps this process ran
    and leaves out the dev checks inside the loop."""
    train_seconds = max(clock.ended - clock.began - in_loop_eval_seconds, 1e-9)
    sequences = clock.steps_run() * config.batch_size * config.gradient_accumulation_steps
    losses = [r["loss"] for r in train_log.records() if "loss" in r and "dev" not in r]
    return {
        "global_step": state.global_step,
        "epochs": float(state.epoch or 0.0),
        "train_loss": float(result.training_loss),
        "final_loss": losses[-1] if losses else None,
        "wall_seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "sequences_per_second": sequences / train_seconds,
    }

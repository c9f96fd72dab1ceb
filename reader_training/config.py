"""Training configuration: one validated YAML file per run (``configs/train/<name>.yaml``).

A misspelt key or a bad value fails with one line naming the key, the value, what is allowed and
the nearest valid key. ``--set key=value`` overrides (values parsed as YAML, so lists work too) are
applied to the raw mapping before validation.

It speaks transformers' ``run_qa.py`` too: its argument names (``model_name_or_path``,
``max_seq_length``, ``doc_stride``, ``per_device_train_batch_size``, ``train_file``, ...; see
:data:`RUN_QA_ALIASES`) are accepted in the YAML and in ``--set`` for kotae's own keys, and any other
``TrainingArguments`` field (``report_to``, ``lr_scheduler_type``, ``optim``,
``gradient_checkpointing``, ...) goes in a ``trainer_args:`` section, checked against
``TrainingArguments`` when the config is read.

Data paths in the YAML are read relative to the YAML file (``--set`` paths relative to the current
folder), so a config works from any folder.

Example::

    config = load_train_config("configs/train/jaquad-small.yaml", ["max_steps=20", "doc_stride=64"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kotae.config_files import apply_overrides, describe_validation_error, did_you_mean, read_yaml_mapping
from kotae.errors import KotaeError

RUN_QA_ALIASES: dict[str, str] = {
    "model_name_or_path": "base_model",
    "max_seq_length": "max_length",
    "doc_stride": "stride",
    "n_best_size": "n_best",
    "null_score_diff_threshold": "null_score_threshold",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "train_file": "train_data",
    "validation_file": "dev_data",
    "disable_tqdm": "progress",
}
"""run_qa.py's argument name -> kotae's key. The names they share (``learning_rate``,
``num_train_epochs``, ``output_dir``, ``max_answer_length``, ``max_steps``, ``warmup_ratio``,
``weight_decay``, ``seed``, ``gradient_accumulation_steps``, ``logging_steps``, ``save_steps``,
``save_total_limit``) need no alias. ``disable_tqdm`` is inverted into ``progress``."""

TRAINER_ARGS_OWNED: dict[str, str] = {
    "output_dir": "output_dir",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "num_train_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "warmup_ratio": "warmup_ratio",
    "warmup_steps": "warmup_ratio",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "disable_tqdm": "progress",
    "train_sampling_strategy": "group_by_length",
    "group_by_length": "group_by_length",
    "bf16": "precision",
    "fp16": "precision",
    "use_cpu": "precision",
}
"""``TrainingArguments`` fields kotae sets from its own keys: in ``trainer_args`` they are refused,
naming the kotae key to set instead (one place for each value)."""

TRAINER_ARGS_FIXED = frozenset(
    {"save_strategy", "eval_strategy", "length_column_name", "remove_unused_columns", "do_train", "do_eval"}
)
"""``TrainingArguments`` fields kotae's training loop depends on (checkpoints by step, its own dev
evaluation, the ``length`` column); refused in ``trainer_args``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainSource(_Strict):
    """One training set in the mix."""

    path: str
    weight: float = Field(1.0, ge=0, description="copies of the set: 2.0 doubles it, 0.5 samples half")
    max_examples: int | None = Field(None, gt=0, description="first N questions of the set")


class DevSource(_Strict):
    """One development set, scored and reported on its own."""

    path: str
    name: str | None = None
    max_examples: int | None = Field(None, gt=0)

    @property
    def label(self) -> str:
        return self.name or Path(self.path.rstrip("/")).name or self.path


class TrainConfig(_Strict):
    """Everything one reader training run needs; defaults follow the usual SQuAD recipe."""

    base_model: str = "multilingual-e5-small"
    output_dir: str = "runs/reader"
    train_data: list[TrainSource] = Field(min_length=1)
    dev_data: list[DevSource] = []
    language: Literal["auto", "ja", "en"] = "auto"

    max_length: int = Field(384, ge=32)
    stride: int = Field(128, ge=0)
    max_question_length: int = Field(64, gt=0)
    negative_window_ratio: float = Field(1.0, ge=0, le=1)
    max_train_windows: int | None = Field(None, gt=0)

    learning_rate: float = Field(3e-5, gt=0)
    num_train_epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides num_train_epochs")
    batch_size: int = Field(16, gt=0)
    eval_batch_size: int = Field(32, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 42
    freeze_word_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0, description="freeze the lowest N encoder layers")
    group_by_length: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    torch_threads: int | None = Field(None, gt=0)

    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="dev evaluation interval; always at the end")
    save_steps: int = Field(500, gt=0)
    save_total_limit: int = Field(2, gt=0)
    keep_checkpoints: bool = False
    snapshot_steps: int | None = Field(
        None,
        gt=0,
        description="every N steps keep the trained tensors in output_dir/snapshots/ (never removed): "
        "the learning curve and checkpoint averaging (python -m kotae.reader_training.snapshots)",
    )
    progress: bool = True

    max_answer_length: int = Field(30, gt=0)
    n_best: int = Field(20, gt=0)
    null_score_threshold: float = 0.0

    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="any other transformers TrainingArguments field, e.g. {report_to: tensorboard}",
    )

    @field_validator("trainer_args")
    @classmethod
    def _trainer_args_known(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_trainer_args(value)
        return value

    @model_validator(mode="after")
    def _stride_fits(self) -> TrainConfig:
        if self.stride >= self.max_length - self.max_question_length - 4:
            raise ValueError(
                f"stride ({self.stride}) must be smaller than max_length - max_question_length - 4 "
                f"({self.max_length - self.max_question_length - 4})"
            )
        return self

    @model_validator(mode="after")
    def _dev_names_unique(self) -> TrainConfig:
        labels = [source.label for source in self.dev_data]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"dev_data: name {repeated[0]!r} is used twice; give each dev set its own name")
        return self

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).expanduser()


def check_trainer_args(args: dict[str, Any]) -> None:
    """Refuse a ``trainer_args`` key that is not a ``TrainingArguments`` field, that kotae sets from
    its own key, or that its training loop fixes; one line naming the key (and the nearest field)."""
    if not args:
        return
    import dataclasses

    from transformers import TrainingArguments

    fields = {field.name for field in dataclasses.fields(TrainingArguments) if field.init}
    for key in args:
        if key in TRAINER_ARGS_OWNED:
            raise ValueError(
                f"trainer_args.{key}: kotae sets this from its own key {TRAINER_ARGS_OWNED[key]!r}; "
                f"set {TRAINER_ARGS_OWNED[key]} instead"
            )
        if key in TRAINER_ARGS_FIXED:
            raise ValueError(f"trainer_args.{key}: kotae's training loop sets this itself; remove it")
        if key not in fields:
            raise ValueError(
                f"trainer_args.{key}: not a transformers TrainingArguments field{did_you_mean(key, fields)}"
            )


def canonical_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """run_qa.py's names rewritten to kotae's keys; a key given under both names is refused."""
    result: dict[str, Any] = {}
    for key, value in raw.items():
        name = RUN_QA_ALIASES.get(key, key)
        if key == "disable_tqdm":
            value = not value if isinstance(value, bool) else value
        if name in result:
            other = next(k for k in raw if RUN_QA_ALIASES.get(k, k) == name and k != key)
            raise KotaeError(f"{source}: {other!r} and {key!r} are the same setting ({name}); keep one")
        result[name] = value
    return result


def canonical_override(item: str) -> str:
    """A ``--set`` item with a run_qa.py name rewritten to kotae's key (``doc_stride=64`` -> ``stride=64``)."""
    key, sep, value = item.partition("=")
    head, dot, rest = key.partition(".")
    if head not in RUN_QA_ALIASES or not sep:
        return item
    if head == "disable_tqdm" and not dot:
        return f"progress={'false' if value.strip().lower() in ('true', 'yes', '1') else 'true'}"
    return f"{RUN_QA_ALIASES[head]}{dot}{rest}={value}"


def _sources(value: Any) -> Any:
    """A single path (or a list of paths) as a list of ``{path: ...}`` sources."""
    if isinstance(value, str):
        return [{"path": value}]
    if isinstance(value, list):
        return [{"path": item} if isinstance(item, str) else item for item in value]
    return value


def _relative_to(folder: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The YAML's local data paths joined to ``folder`` (the config file's); hub names are kept."""
    from kotae.reader_training.data import is_local_source

    for key in ("train_data", "dev_data"):
        for source in raw.get(key) or []:
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                path = source["path"]
                joined = folder / Path(path).expanduser()
                if not Path(path).expanduser().is_absolute() and is_local_source(path, folder):
                    source["path"] = os.path.normpath(joined)
    return raw


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``--set`` overrides, validate; one-line KotaeError on any problem.

    Keys may use run_qa.py's names (:data:`RUN_QA_ALIASES`); the YAML's relative data paths are
    made absolute against the YAML's folder, ``--set`` ones are kept as typed (the current folder).
    """
    raw: dict[str, Any] = {}
    source = "--set"
    if path is not None:
        source = str(path)
        raw = canonical_keys(read_yaml_mapping(path, "keys (base_model, train_data, ...)"), source)
        for key in ("train_data", "dev_data"):
            if raw.get(key) is not None:
                raw[key] = _sources(raw[key])
        raw = _relative_to(Path(path).resolve().parent, raw)
    raw = apply_overrides(raw, [canonical_override(item) for item in overrides or []], example="max_steps=20")
    # A single path is accepted where a list of sources is expected.
    for key in ("train_data", "dev_data"):
        if raw.get(key) is not None:
            raw[key] = _sources(raw[key])
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise KotaeError(
            describe_validation_error(
                error, source, "configs/train/jaquad-small.yaml", TrainConfig, aliases=RUN_QA_ALIASES
            )
        ) from None

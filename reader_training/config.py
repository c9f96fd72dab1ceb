"""Training configuration: one validated YAML file per run (``configs/train/<name>.yaml``).

A misspelt key or a bad value fails with one line naming the key, the value and what is allowed.
``--set key=value`` overrides (values parsed as YAML, so lists work too) are applied to the raw
mapping before validation.

Example::

    config = load_train_config("configs/train/jaquad-small.yaml", ["max_steps=20"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kotae.config_files import apply_overrides, describe_validation_error, read_yaml_mapping
from kotae.errors import KotaeError


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
    progress: bool = True

    max_answer_length: int = Field(30, gt=0)
    n_best: int = Field(20, gt=0)
    null_score_threshold: float = 0.0

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


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``--set`` overrides, validate; one-line KotaeError on any problem."""
    raw: dict[str, Any] = {}
    source = "--set"
    if path is not None:
        source = str(path)
        raw = read_yaml_mapping(path, "keys (base_model, train_data, ...)")
    raw = apply_overrides(raw, overrides or [], example="max_steps=20")
    # A single path is accepted where a list of sources is expected.
    for key in ("train_data", "dev_data"):
        if isinstance(raw.get(key), str):
            raw[key] = [{"path": raw[key]}]
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise KotaeError(
            describe_validation_error(error, source, "configs/train/jaquad-small.yaml")
        ) from None

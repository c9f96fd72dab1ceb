"""Pipeline configuration: one validated YAML file describes the index, retrievers and reader.

A misspelt key or a bad value fails with one line naming the key, the value and what is allowed.
``--set a.b=c`` overrides are applied to the raw mapping before validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from kotae.config_files import apply_overrides, describe_validation_error, read_yaml_mapping, resolve_config
from kotae.errors import KotaeError
from kotae.indexing.settings import EmbedderConfig, IndexConfig
from kotae.indexing.settings import Section as _Section


class RetrieverConfig(_Section):
    """Which retrievers run, and how their rankings are fused.

    ``hybrid`` runs dense (FAISS) and BM25 retrieval and fuses the two rankings by reciprocal rank
    (Haystack's DocumentJoiner, k = 61); ``weights`` ([dense, bm25]) tilts the fusion.
    """

    type: Literal["dense", "bm25", "hybrid"] = "hybrid"
    top_k: int = Field(10, gt=0, le=1000)
    weights: tuple[float, float] | None = None

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and (min(value) < 0 or sum(value) <= 0):
            raise ValueError("weights must be two non-negative numbers [dense, bm25], not both 0")
        return value


class ReaderConfig(_Section):
    """The extractive reader over the retrieved passages.

    ``type: kotae`` is kotae's own reader (the decoder ``kotae evaluate`` scores); ``haystack`` is
    transformers-haystack's TransformersExtractiveReader on the same model. Windowing settings left
    out (None) are taken from the model's ``reader_config.json`` (what it was trained and measured
    with), else the ``kotae evaluate`` defaults. ``max_answer_length`` counts tokens.
    ``relative_scores`` (kotae reader) ranks spans from different passages by their margin over
    their own window's no-answer score instead of raw logit sums (see reader_training/decode.py).
    ``retriever_weight`` w (0-1; kotae reader) ranks answers from different passages by
    ``(1 - w) * reader score + w * retriever evidence``, the evidence being ``-log`` of the passage's
    retrieval rank (``retriever_evidence: rank``) or its retrieval score (``score``); 0 is the reader
    alone (see pipeline/ranking.py; the shipped configs' values are measured by
    bench/rank_interpolation.py).
    ``runtime`` (kotae reader) is how the model runs: ``torch`` (float32), ``torch-bf16``,
    ``onnx`` (float32 ONNX), ``onnx-int8`` or ``auto`` (the int8 ONNX form on a CPU with VNNI or AMX
    where onnxruntime is installed, else torch; see reader_training/runtime.py and docs/speed.md);
    ``auto`` is the default. The built-in ranking and early-stopping values are the shipped
    ``default.yaml``'s, so ``kotae serve`` without ``--config`` gets them too.
    ``early_stop_margin`` (kotae reader) reads the passages in rounds (``early_stop_after``: the first
    3, then up to 6, then the rest) and stops once no unread passage could beat the best answer if no
    reader margin exceeds it; null reads every passage (see docs/speed.md for the measured choice).
    """

    type: Literal["kotae", "haystack"] = "kotae"
    model: str = "reader-e5-small-ja-en"
    top_k: int = Field(5, gt=0, le=100)
    max_answer_length: int | None = Field(None, gt=0)
    max_length: int | None = Field(None, gt=16)
    stride: int | None = Field(None, ge=0)
    max_question_length: int | None = Field(None, gt=0)
    n_best: int | None = Field(None, gt=0)
    no_answer: bool = False
    no_answer_threshold: float | None = None
    batch_size: int | None = Field(None, gt=0)
    device: str | None = None
    relative_scores: bool = True  # rank spans by margin over their window's no-answer score
    # retriever's share of an answer's ranking score; the built-in defaults are the shipped default.yaml's
    retriever_weight: float = Field(0.75, ge=0.0, le=1.0)
    retriever_evidence: Literal["rank", "score"] = "rank"  # -log(retrieval rank) or the passage's score
    runtime: Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"] = "auto"
    early_stop_margin: float | None = 10.0  # stop reading once unread passages cannot win (None: read all)
    early_stop_after: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [3, 6]
    )  # checks after


class PipelineConfig(_Section):
    """A whole pipeline: embedder + index + retriever + reader."""

    embedder: EmbedderConfig = EmbedderConfig()
    index: IndexConfig = IndexConfig()
    retriever: RetrieverConfig = RetrieverConfig()
    reader: ReaderConfig = ReaderConfig()

    @property
    def index_dir(self) -> Path:
        """``index.dir`` with ``$KOTAE_HOME`` and ``~`` expanded."""
        from kotae.models import expand_home

        return expand_home(self.index.dir)


def load_pipeline_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """Read a pipeline YAML (or the defaults when ``path`` is None), apply overrides, validate.

    ``path`` may also name a shipped config (``default``, ``dense``, ``bm25``): see
    :func:`kotae.config_files.resolve_config`.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = resolve_config(path, "pipeline")
        source = str(path)
        raw = read_yaml_mapping(path, "sections (embedder, index, retriever, reader)")
    raw = apply_overrides(raw, overrides or [], example="reader.top_k=3")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise KotaeError(
            describe_validation_error(error, source, "kotae pipeline show --config default", PipelineConfig)
        ) from None

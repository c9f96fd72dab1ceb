"""Pipeline configuration: one validated YAML file describes the index, retrievers and reader.

A misspelt key or a bad value fails with one line naming the key, the value and what is allowed.
``--set a.b=c`` overrides are applied to the raw mapping before validation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kotae.config_files import apply_overrides, describe_validation_error, read_yaml_mapping
from kotae.errors import KotaeError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EmbedderConfig(_Section):
    """The sentence embedder used for passages (indexing) and questions (dense retrieval)."""

    model: str = "multilingual-e5-small"
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    batch_size: int = Field(32, gt=0)
    device: str | None = None


class IndexConfig(_Section):
    """Where and how passages are stored, and which engine computes them.

    ``engine: ray`` splits and embeds on Ray actors (``pip install 'kotae[ray]'``): ``ray_address``
    joins a running cluster (``auto``, ``host:port``, ``ray://host:10001``; empty starts Ray on this
    machine for the run), ``ray_workers`` actors each take ``ray_batch_size`` documents per call and
    ask for ``ray_cpus_per_worker`` CPUs (fractional, so a small machine never deadlocks) and
    ``ray_gpus_per_worker`` GPUs. ``ray_input`` is how documents reach the workers: ``data`` (sent by
    the driver) or ``paths`` (workers read the files; needs shared storage). See docs/scaling.md.

    ``store`` is where passages live: ``kotae`` (FAISS + SQLite in ``dir``) or ``milvus``
    (``pip install 'kotae[milvus]'``): collection ``milvus_collection`` at ``milvus_uri``, a file
    path for Milvus Lite in this process (default ``<dir>/milvus.db``) or ``http://host:19530`` for
    a server; a token comes from the environment (``KOTAE_MILVUS_TOKEN``), never from this file.
    ``dir`` then keeps only local files (BM25 index, feedback labels, the job's lock).
    """

    dir: str = "~/.cache/kotae/index/default"
    store: Literal["kotae", "milvus"] = "kotae"
    milvus_uri: str | None = None
    milvus_collection: str = "kotae"
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = "FLAT"
    faiss_factory: str = "Flat"
    passage_tokens: int = Field(200, gt=8)
    overlap_tokens: int = Field(32, ge=0)
    bm25_tokenizer: Literal["bigram", "fugashi"] = "fugashi"
    faiss_nprobe: int = Field(16, gt=0)
    commit_documents: int = Field(256, gt=0)
    max_document_chars: int = Field(5_000_000, gt=0)
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_workers: int = Field(2, gt=0)
    ray_batch_size: int = Field(64, gt=0)
    ray_cpus_per_worker: float = Field(0.5, gt=0)
    ray_gpus_per_worker: float = Field(0.0, ge=0)
    ray_input: Literal["data", "paths"] = "data"

    @field_validator("milvus_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value and ("@" in value.split("/")[2 if "://" in value else 0] or "token=" in value):
            raise ValueError(
                "index.milvus_uri must not carry credentials; set the token in the environment variable KOTAE_MILVUS_TOKEN"
            )
        return value

    @field_validator("milvus_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,180}", value):
            raise ValueError(
                f"index.milvus_collection {value!r} must be letters, digits and underscores, starting with a letter (e.g. kotae)"
            )
        return value


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


class PipelineConfig(_Section):
    """A whole pipeline: embedder + index + retriever + reader."""

    embedder: EmbedderConfig = EmbedderConfig()
    index: IndexConfig = IndexConfig()
    retriever: RetrieverConfig = RetrieverConfig()
    reader: ReaderConfig = ReaderConfig()

    @property
    def index_dir(self) -> Path:
        return Path(self.index.dir).expanduser()


def load_pipeline_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """Read a pipeline YAML (or the defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = read_yaml_mapping(path, "sections (embedder, index, retriever, reader)")
    raw = apply_overrides(raw, overrides or [], example="reader.top_k=3")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise KotaeError(describe_validation_error(error, source, "configs/pipeline/default.yaml")) from None

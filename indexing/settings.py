"""Index and embedder settings: the ``embedder`` and ``index`` sections of a pipeline YAML.

They live here, with the job that reads them; :class:`kotae.pipeline.config.PipelineConfig`
composes them with the retriever and reader sections. :class:`IndexJobConfig` is what the indexing
job takes (a ``PipelineConfig`` is one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["EmbedderConfig", "IndexConfig", "IndexJobConfig", "Section"]


class Section(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EmbedderConfig(Section):
    """The sentence embedder used for passages (indexing) and questions (dense retrieval)."""

    model: str = "multilingual-e5-small"
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    batch_size: int = Field(32, gt=0)
    device: str | None = None


class IndexConfig(Section):
    """Where and how passages are stored, and which engine computes them.

    ``dir`` may start with ``$KOTAE_HOME`` (the default, ``$KOTAE_HOME/index/default``), which follows
    the environment variable like the models do (``~/.cache/kotae`` when it is unset).

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

    dir: str = "$KOTAE_HOME/index/default"  # $KOTAE_HOME: ~/.cache/kotae unless set
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


class IndexJobConfig(Protocol):
    """What the indexing job reads from a config: the embedder, the index settings, the index folder."""

    @property
    def embedder(self) -> EmbedderConfig: ...

    @property
    def index(self) -> IndexConfig: ...

    @property
    def index_dir(self) -> Path: ...

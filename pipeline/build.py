"""A Haystack pipeline from a :class:`~kotae.pipeline.config.PipelineConfig`, and loading one back safely.

The retriever section decides the front of the pipeline, the reader section its end::

    dense:   query_embedder ──► dense_retriever ──────────────────────► reader
    bm25:                        bm25_retriever ──────────────────────► reader
    hybrid:  query_embedder ──► dense_retriever ─┐
                                 bm25_retriever ─┴► joiner (RRF) ─────► reader

``reader.type`` picks kotae's :class:`~kotae.pipeline.reader.KotaeExtractiveReader` or transformers-haystack's
``TransformersExtractiveReader`` on the same model.

kotae's components are serialised under their Haystack-integration names
(``haystack_integrations.components.retrievers.kotae.KotaeBM25Retriever``, ...), so Haystack's own
``Pipeline.loads`` (and hayhooks) load the YAML with no allow-list change. The model references and
index folder are kept as written and devices left to the machine, so the YAML is portable.

Pipeline YAML (``Pipeline.dumps``) is loaded back with :func:`load_pipeline_yaml`, which renames the
types older kotae versions wrote (:data:`LEGACY_TYPES`), checks every class the YAML names against
:data:`ALLOWED_MODULES` (kotae's component modules and the Haystack modules used here) and only then
lets Haystack deserialise it. A YAML naming anything else is refused before anything is imported.
An allowed class cannot be told to run code or unpickle weights either (:func:`safe_parameters`):
``trust_remote_code: true`` or ``use_safetensors: false`` anywhere in a component's parameters is
refused in one line, and a component that takes ``model_kwargs`` loads with
``use_safetensors: true, trust_remote_code: false`` whatever the YAML leaves out.

Example::

    config = load_pipeline_config("configs/pipeline/bm25.yaml")
    pipeline = build_pipeline(config)
    same = load_pipeline_yaml(pipeline.dumps())
"""

from __future__ import annotations

from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kotae.errors import IndexUnavailable, KotaeError
from kotae.model_files import SAFE_MODEL_KWARGS, require_safetensors
from kotae.pipeline.config import PipelineConfig, ReaderConfig
from kotae.weight_files import sha256

if TYPE_CHECKING:
    from haystack import Pipeline

KOTAE_MODULES: tuple[str, ...] = (
    "haystack_integrations.document_stores.kotae",
    "haystack_integrations.components.retrievers.kotae",
    "haystack_integrations.components.readers.kotae",
    "haystack_integrations.components.embedders.kotae",
    "haystack_integrations.components.embedders.kotae.sentence_transformers",
)
"""The modules kotae's components are serialised under (their public home, a Haystack integration)."""

LEGACY_TYPES: dict[str, str] = {
    "kotae.indexing.store.FaissDocumentStore": "haystack_integrations.document_stores.kotae.KotaeDocumentStore",
    "kotae.indexing.milvus_store.MilvusDocumentStore": (
        "haystack_integrations.document_stores.kotae.KotaeMilvusDocumentStore"
    ),
    "kotae.indexing.retriever.FaissEmbeddingRetriever": (
        "haystack_integrations.components.retrievers.kotae.KotaeEmbeddingRetriever"
    ),
    "kotae.indexing.bm25.BM25Retriever": "haystack_integrations.components.retrievers.kotae.KotaeBM25Retriever",
    "kotae.pipeline.reader.KotaeExtractiveReader": (
        "haystack_integrations.components.readers.kotae.KotaeExtractiveReader"
    ),
}
"""The types older kotae versions wrote into pipeline YAML, and the class each names today."""

HAYSTACK_MODULES: tuple[str, ...] = (
    "haystack.components.joiners.document_joiner",
    "haystack_integrations.components.embedders.sentence_transformers.sentence_transformers_text_embedder",
    "haystack_integrations.components.readers.transformers.extractive_reader",
)
"""Haystack modules whose classes a kotae pipeline uses."""

ALLOWED_MODULES: tuple[str, ...] = KOTAE_MODULES + HAYSTACK_MODULES

COMPONENTS = ("query_embedder", "dense_retriever", "bm25_retriever", "joiner", "reader")

STORE_FILE = "store.sqlite3"


def index_command(config_path: str | Path | None, index_dir: Path) -> str:
    """The command that builds the index, for error messages."""
    config = f" --config {config_path}" if config_path else ""
    return f"kotae index{config} --index-dir {index_dir} --corpus PATH"


def require_index(
    index_dir: Path, config_path: str | Path | None = None, config: PipelineConfig | None = None
) -> int:
    """How many passages ``index_dir`` holds; a one-line KotaeError when there is no index or it is empty.

    Reads the store's SQLite file read-only, so nothing is created or locked. With
    ``index.store: milvus`` in ``config``, counts the Milvus collection instead.
    """
    import sqlite3

    if config is not None and config.index.store == "milvus":
        return _require_milvus(config, index_dir, config_path)
    path = index_dir / STORE_FILE
    if not path.is_file():
        raise KotaeError(f"no index at {index_dir}; build it first: {index_command(config_path, index_dir)}")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            count = int(connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    except sqlite3.Error as error:
        from kotae.indexing.store import damaged_store_message

        rebuild = f"{index_command(config_path, index_dir)} --full"
        raise IndexUnavailable(damaged_store_message(index_dir, error, rebuild)) from None
    if count == 0:
        raise KotaeError(
            f"the index at {index_dir} is empty; add documents: {index_command(config_path, index_dir)}"
        )
    return count


def _require_milvus(config: PipelineConfig, index_dir: Path, config_path: str | Path | None) -> int:
    from haystack.document_stores.errors import DocumentStoreError

    from kotae.indexing.stores import milvus_passages

    try:
        count = milvus_passages(config)
    except DocumentStoreError as error:
        raise IndexUnavailable(str(error)) from None
    if count == 0:
        raise KotaeError(
            f"Milvus collection {config.index.milvus_collection!r} is empty; "
            f"build the index first: {index_command(config_path, index_dir)}"
        )
    return count


def index_state(index_dir: Path, key: str) -> str | None:
    """A value the index job recorded in ``index_dir``'s store (``set_state``), read read-only; None if absent."""
    import sqlite3

    path = index_dir / STORE_FILE
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            row = connection.execute("SELECT value FROM state WHERE key = ?", (f"user.{key}",)).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _folder_digest(folder: Path) -> str:
    """A digest of a model folder's weights (the ``.safetensors`` files kotae loads, whole), so copies
    agree whatever else lies beside them and two fine-tunes of one base do not."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(folder)}|{_file_digest(path, stat.st_size, stat.st_mtime_ns)}|".encode()
        )
    return digest.hexdigest()


@lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """:func:`kotae.weight_files.sha256`, once per file version (size and mtime are the cache key)."""
    return sha256(path)


def same_model(recorded: Path, wanted: Path) -> bool:
    """Whether the folder an index was built with and the one asked with hold the same model: a copy
    counts; when the recorded folder is gone (``$KOTAE_HOME`` moved), the same folder name does."""
    if not recorded.is_dir():
        return recorded.name == wanted.name
    return _folder_digest(recorded) == _folder_digest(wanted)


def _recorded_fingerprint(config: PipelineConfig) -> str | None:
    """The embedder fingerprint the index job recorded: in ``store.sqlite3``, or in the Milvus collection."""
    if config.index.store == "milvus":
        from kotae.indexing.stores import milvus_state

        return milvus_state(config, "fingerprint")
    return index_state(config.index_dir, "fingerprint")


def require_same_embedder(config: PipelineConfig, config_path: str | Path | None = None) -> None:
    """Refuse, in one line naming both, to retrieve densely with another embedder than the index's.

    The index job records its embedder's fingerprint (model folder and passage prefix; in the Milvus
    collection with ``index.store: milvus``); questions embedded by another model would be compared
    with meaningless vectors. Another folder holding
    the same model (:func:`same_model`), BM25-only retrieval and indexes without a record pass.
    """
    if config.retriever.type == "bm25":
        return
    from kotae.indexing.embedder import SentenceTransformerEmbedder, resolve_embedder_dir

    recorded = _recorded_fingerprint(config)
    if recorded is None:
        return
    wanted = SentenceTransformerEmbedder(
        resolve_embedder_dir(config.embedder.model), config.embedder.passage_prefix
    ).fingerprint
    if recorded.startswith(wanted + "|"):
        return
    built_with = recorded.split("|", 1)[0]
    asked_with = wanted.split("|", 1)[0]
    same_prefix = recorded.startswith(f"{built_with}|{config.embedder.passage_prefix}|")
    if same_prefix and same_model(Path(built_with), Path(asked_with)):
        return
    if built_with == asked_with:
        built_with += f" (passage prefix {recorded.split('|')[1]!r})"
        asked_with += f" (passage prefix {config.embedder.passage_prefix!r})"
    raise KotaeError(
        f"the index at {config.index_dir} was built with embedder {built_with}, but this run embeds "
        f"questions with {config.embedder.model} ({asked_with}); set embedder.model to the index's "
        f"(--set embedder.model=...) or rebuild the index: {index_command(config_path, config.index_dir)} --full"
    )


def check_reader_model(ref: str) -> None:
    """Fail in one line, before any loading, when the reader model cannot be found locally."""
    from kotae.models import ALIASES

    if Path(ref).expanduser().is_dir() or ref in ALIASES or "/" in ref:
        return  # a folder, an alias (prepared on use) or a hub id (resolve_model explains failures)
    raise KotaeError(
        f"reader model {ref!r} is not prepared (not a model folder or a kotae alias: {', '.join(ALIASES)}); "
        "train one with `kotae train --config configs/train/...` and set reader.model to its folder "
        "(--set reader.model=PATH)"
    )


def _device(name: str | None) -> Any:
    from haystack.utils import ComponentDevice

    return ComponentDevice.from_str(name) if name else None


def query_embedder(config: PipelineConfig, check_models: bool = True) -> Any:
    """The question embedder, its model and device as written (an alias stays an alias, resolved when
    it loads): kotae's :class:`~kotae.indexing.query_embedder.KotaeQueryEmbedder` when it computes the
    model's vectors exactly (no sentence-transformers import: a faster start), else
    :class:`~kotae.pipeline.text_embedder.KotaeTextEmbedder` (sentence-transformers).

    ``check_models=False`` prepares and reads nothing: the shipped embedder aliases are all plain
    models (a reader alias is not an embedder, so it gets the sentence-transformers path, as a
    prepared reader folder would)."""
    from kotae.indexing.embedder import resolve_embedder_dir
    from kotae.indexing.query_embedder import KotaeQueryEmbedder, plain_folder
    from kotae.models import ALIASES, READERS

    model = config.embedder.model
    if check_models:
        folder = resolve_embedder_dir(model)
        require_safetensors(folder, "embedder")
        plain = plain_folder(folder)
    else:
        plain = (model in ALIASES and model not in READERS) or plain_folder(Path(model).expanduser())
    if plain:
        return KotaeQueryEmbedder(
            model=model,
            prefix=config.embedder.query_prefix,
            normalize_embeddings=True,
            device=config.embedder.device,
            model_kwargs={"use_safetensors": True},  # never a pickled pytorch_model.bin
        )
    from kotae.pipeline.text_embedder import KotaeTextEmbedder

    return KotaeTextEmbedder(
        model=model,
        device=_device(config.embedder.device),
        prefix=config.embedder.query_prefix,
        batch_size=config.embedder.batch_size,
    )


def build_components(
    config: PipelineConfig, check_models: bool = True, open_index: bool = True
) -> dict[str, Any]:
    """The named components the config asks for (not warmed up; no model is loaded here).

    Model references and the index folder are kept as written (an alias stays an alias, resolved
    when the model loads; ``$KOTAE_HOME`` stays in the folder), and devices as configured (None:
    chosen when the model loads), so the pipeline's YAML is portable. ``check_models=False`` does not
    check that the models exist (for showing a pipeline before its reader is trained);
    ``open_index=False`` describes the store without opening it (nothing on disk is touched).
    """
    from kotae.indexing.bm25 import KotaeBM25Retriever
    from kotae.indexing.retriever import KotaeEmbeddingRetriever
    from kotae.indexing.stores import describe_store, open_store

    retriever, reader = config.retriever, config.reader
    components: dict[str, Any] = {}
    store = open_store(config) if open_index else describe_store(config)
    if retriever.type in ("dense", "hybrid"):
        components["query_embedder"] = query_embedder(config, check_models)
        components["dense_retriever"] = KotaeEmbeddingRetriever(store, top_k=retriever.top_k)
    if retriever.type in ("bm25", "hybrid"):
        components["bm25_retriever"] = KotaeBM25Retriever(
            store, top_k=retriever.top_k, tokenizer=config.index.bm25_tokenizer
        )
    if retriever.type == "hybrid":
        from haystack.components.joiners import DocumentJoiner

        components["joiner"] = DocumentJoiner(
            join_mode="reciprocal_rank_fusion",
            weights=list(retriever.weights) if retriever.weights else None,
            top_k=retriever.top_k,
        )
    components["reader"] = build_reader(reader, check_models)
    return components


def build_reader(reader: ReaderConfig, check_models: bool = True) -> Any:
    """The reader component the ``reader`` section asks for (not warmed up): kotae's reader, or
    transformers-haystack's ``TransformersExtractiveReader`` on the same model and windowing."""
    if check_models:
        check_reader_model(reader.model)
        require_safetensors(reader.model, "reader")  # a folder; an alias is checked once resolved
    if reader.type == "kotae":
        from kotae.pipeline.reader import KotaeExtractiveReader

        return KotaeExtractiveReader(
            model=reader.model,
            top_k=reader.top_k,
            max_answer_length=reader.max_answer_length,
            max_length=reader.max_length,
            stride=reader.stride,
            max_question_length=reader.max_question_length,
            n_best=reader.n_best,
            no_answer=reader.no_answer,
            no_answer_threshold=reader.no_answer_threshold,
            batch_size=reader.batch_size,
            device=reader.device,
            relative_scores=reader.relative_scores,
            retriever_weight=reader.retriever_weight,
            retriever_evidence=reader.retriever_evidence,
            runtime=reader.runtime,
            early_stop_margin=reader.early_stop_margin,
            early_stop_after=reader.early_stop_after,
        )
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader

    from kotae.reader_training.evaluate import resolve_reference, saved_settings

    model = reader.model
    trained: dict[str, Any] = {}
    if check_models:  # a local folder, and the windowing the model was trained with
        folder = resolve_reference(reader.model)
        require_safetensors(folder, "reader")
        model, trained = str(folder), saved_settings(folder)
    max_length = reader.max_length or trained.get("max_length", 384)
    stride = reader.stride if reader.stride is not None else trained.get("stride", 128)
    return TransformersExtractiveReader(
        model=model,
        device=_device(reader.device),
        token=None,
        top_k=reader.top_k,
        max_seq_length=max_length,
        stride=stride,
        max_batch_size=reader.batch_size,
        answers_per_seq=reader.n_best,
        no_answer=reader.no_answer,
        model_kwargs=dict(SAFE_MODEL_KWARGS),  # safetensors only, no code from the folder
    )


def build_pipeline(config: PipelineConfig, check_models: bool = True, open_index: bool = True) -> Pipeline:
    """The Haystack pipeline for ``config``: retriever(s) → (joiner) → reader (see :func:`build_components`)."""
    from haystack import Pipeline

    pipeline = Pipeline()
    for name, instance in build_components(config, check_models, open_index).items():
        pipeline.add_component(name, instance)
    names = set(pipeline.graph.nodes)
    if "query_embedder" in names:
        pipeline.connect("query_embedder.embedding", "dense_retriever.query_embedding")
    if "joiner" in names:
        pipeline.connect("dense_retriever.documents", "joiner.documents")
        pipeline.connect("bm25_retriever.documents", "joiner.documents")
        pipeline.connect("joiner.documents", "reader.documents")
    elif "dense_retriever" in names:
        pipeline.connect("dense_retriever.documents", "reader.documents")
    else:
        pipeline.connect("bm25_retriever.documents", "reader.documents")
    return pipeline


def _named_classes(data: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``type: a.b.C`` in a pipeline mapping, as ``(where, dotted name)``."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        kind = data.get("type")
        if isinstance(kind, str) and "." in kind:
            found.append((where or "pipeline", kind))
        for key, value in data.items():
            found.extend(_named_classes(value, f"{where}.{key}" if where else str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(_named_classes(value, f"{where}[{index}]"))
    return found


def check_allowed(data: Any) -> None:
    """Refuse (one line) a pipeline mapping that names a class outside :data:`ALLOWED_MODULES`."""
    if not isinstance(data, dict) or not isinstance(data.get("components", {}), dict):
        raise KotaeError("pipeline YAML: expected a mapping with 'components' and 'connections'")
    for name, spec in data.get("components", {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise KotaeError(f"pipeline YAML: component {name!r} has no 'type'")
    for where, dotted in _named_classes(data):
        module = dotted.rpartition(".")[0]
        if module not in ALLOWED_MODULES:
            raise KotaeError(
                f"pipeline YAML: {where} names {dotted!r}, whose module is not on kotae's allow-list "
                f"({', '.join(ALLOWED_MODULES)}); refusing to import it"
            )


UNSAFE_PARAMETERS = SAFE_MODEL_KWARGS
"""Loading parameters a pipeline YAML may only give their safe value (code from a model folder, pickles)."""


def init_parameter_names(dotted: str) -> set[str]:
    """The ``__init__`` parameter names of the (allowed, already checked) class ``dotted``."""
    import importlib
    import inspect

    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return set(inspect.signature(cls.__init__).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return set()  # Haystack's own deserialiser names the problem


def safe_parameters(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a checked pipeline mapping) with loading forced safe; a one-line KotaeError for an unsafe value.

    Every :data:`UNSAFE_PARAMETERS` key, at any depth of a component's ``init_parameters``, must hold
    its safe value (or null). Whatever the YAML gives or leaves out, a component whose class takes
    ``model_kwargs`` gets ``use_safetensors: true`` in it, and one that takes ``trust_remote_code``
    gets ``false``.
    """

    def check(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                safe = UNSAFE_PARAMETERS.get(key) if isinstance(key, str) else None
                if safe is not None and item is not None and item is not safe:
                    raise KotaeError(
                        f"pipeline YAML: {where}.{key} is {item!r}; kotae loads models only with "
                        f"{key}: {str(safe).lower()} (no code from model folders, no pickled weights)"
                    )
                check(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, f"{where}[{index}]")

    components = {}
    for name, spec in data.get("components", {}).items():
        parameters = dict(spec.get("init_parameters") or {})
        where = f"components.{name}.init_parameters"
        check(parameters, where)
        accepted = init_parameter_names(str(spec.get("type", "")))
        if "model_kwargs" in accepted or "model_kwargs" in parameters:
            given = parameters.get("model_kwargs") or {}
            if not isinstance(given, dict):
                raise KotaeError(f"pipeline YAML: {where}.model_kwargs must be a mapping, but got {given!r}")
            parameters["model_kwargs"] = {**given, "use_safetensors": True}
        if "trust_remote_code" in accepted or "trust_remote_code" in parameters:
            parameters["trust_remote_code"] = False
        components[name] = {**spec, "init_parameters": parameters}
    return {**data, "components": components}


def renamed_legacy_types(data: Any) -> Any:
    """``data`` with every ``type`` an older kotae wrote (:data:`LEGACY_TYPES`) replaced by today's name."""
    if isinstance(data, dict):
        renamed = {key: renamed_legacy_types(value) for key, value in data.items()}
        if isinstance(renamed.get("type"), str):
            renamed["type"] = LEGACY_TYPES.get(renamed["type"], renamed["type"])
        return renamed
    if isinstance(data, list):
        return [renamed_legacy_types(value) for value in data]
    return data


def read_pipeline_yaml(text: str) -> dict[str, Any]:
    """A pipeline YAML's mapping, checked and made safe, with nothing imported or opened yet: older
    kotae type names renamed, every class on :data:`ALLOWED_MODULES`, loading parameters safe
    (:func:`safe_parameters`)."""
    from haystack.marshal.yaml import YamlMarshaller

    try:
        data = YamlMarshaller().unmarshal(text)  # safe loading (plus tuples), as Pipeline.loads does
    except (yaml.YAMLError, TypeError) as error:
        raise KotaeError(f"pipeline YAML is not valid ({error})".replace("\n", " ")) from None
    data = renamed_legacy_types(data)
    check_allowed(data)
    return safe_parameters(data)


def pipeline_from_mapping(data: dict[str, Any]) -> Pipeline:
    """The pipeline for a mapping from :func:`read_pipeline_yaml` (Haystack's default allow-list suffices)."""
    from haystack import Pipeline
    from haystack.core.errors import DeserializationError

    try:
        return Pipeline.from_dict(data)
    except DeserializationError as error:
        raise KotaeError(f"pipeline YAML refused: {str(error).splitlines()[0]}") from None


def load_pipeline_yaml(text: str) -> Pipeline:
    """A pipeline from ``Pipeline.dumps`` YAML; only classes from :data:`ALLOWED_MODULES` are imported,
    and only with safe loading parameters (:func:`safe_parameters`)."""
    return pipeline_from_mapping(read_pipeline_yaml(text))

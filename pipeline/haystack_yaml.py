"""Haystack pipeline YAML as a kotae config: ``kotae pipeline show`` writes it, ``--pipeline FILE`` reads it.

:func:`portable_yaml` is the pipeline a config builds, as a file that runs on another machine and in
hayhooks: model aliases as written (resolved when the models load), the index folder as given
(``$KOTAE_HOME/index/default``), no device (chosen when the models load), and the ``inputs`` and
``outputs`` sections hayhooks deploys a YAML pipeline by (``query`` goes to every component that
reads the question; ``answers`` are the reader's). Building it opens nothing: no store, no model.

:func:`read_pipeline_file` reads such a file back for ``kotae ask``, ``serve`` and ``eval``: safely
(:func:`kotae.pipeline.build.read_pipeline_yaml`: allow-list, no remote code, safetensors only), and
with the kotae settings it implies (:func:`pipeline_settings`: the index folder and store, the
embedder, the retrievers, the reader), which the commands use to check the index before anything
is opened, and ``eval`` to index its data set the same way.

Example::

    text = portable_yaml(load_pipeline_config("default"))
    pipeline_file = read_pipeline_file(Path("pipeline.yaml"))   # after writing text there
    config = load_pipeline_config(None, pipeline_file.overrides)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError
from kotae.pipeline.config import PipelineConfig

STORES = "haystack_integrations.document_stores.kotae."
RETRIEVERS = "haystack_integrations.components.retrievers.kotae."
EMBEDDERS = (
    "haystack_integrations.components.embedders.kotae.KotaeQueryEmbedder",
    "haystack_integrations.components.embedders.kotae.sentence_transformers.KotaeTextEmbedder",
    "haystack_integrations.components.embedders.sentence_transformers.sentence_transformers_text_embedder."
    "SentenceTransformersTextEmbedder",
)
READERS = {
    "haystack_integrations.components.readers.kotae.KotaeExtractiveReader": "kotae",
    "haystack_integrations.components.readers.transformers.extractive_reader.TransformersExtractiveReader": (
        "haystack"
    ),
}
QUERY_INPUTS = {"query_embedder": "text", "bm25_retriever": "query", "reader": "query"}
"""Which input of each of kotae's components takes the question."""


def query_targets(components: set[str] | list[str]) -> list[str]:
    """The ``component.input`` paths that take the question, for the components present."""
    return [f"{name}.{field}" for name, field in QUERY_INPUTS.items() if name in components]


def portable_yaml(config: PipelineConfig) -> str:
    """The pipeline ``config`` builds as portable Haystack YAML with hayhooks' ``inputs``/``outputs``;
    nothing is opened or created (no store, no model)."""
    from haystack.marshal.yaml import YamlMarshaller

    from kotae.pipeline.build import build_pipeline

    pipeline = build_pipeline(config, check_models=False, open_index=False)
    data = pipeline.to_dict()
    data["inputs"] = {"query": query_targets(set(pipeline.graph.nodes))}
    data["outputs"] = {"answers": "reader.answers"}
    return YamlMarshaller().marshal(data)


@dataclass(frozen=True)
class PipelineFile:
    """A checked, safe pipeline YAML mapping, where it came from, and the kotae settings it implies."""

    path: Path
    data: dict[str, Any]
    settings: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        """:attr:`settings` as ``--set`` overrides (``section.key=JSON``) for :func:`load_pipeline_config`."""
        return [
            f"{section}.{key}={json.dumps(value)}"
            for section, values in self.settings.items()
            for key, value in values.items()
        ]

    @property
    def query_targets(self) -> list[str]:
        """The ``component.input`` paths the question goes to: the YAML's ``inputs.query``, else kotae's."""
        declared = (self.data.get("inputs") or {}).get("query")
        if isinstance(declared, str):
            return [declared]
        if isinstance(declared, list) and all(isinstance(item, str) and "." in item for item in declared):
            return list(declared)
        return query_targets(set(self.data.get("components", {})))

    @property
    def answers_from(self) -> str:
        """The component whose ``answers`` output holds the answers: the YAML's ``outputs.answers``, else ``reader``."""
        declared = (self.data.get("outputs") or {}).get("answers")
        return declared.split(".", 1)[0] if isinstance(declared, str) and "." in declared else "reader"


def read_pipeline_file(path: Path) -> PipelineFile:
    """Read and check a pipeline YAML file (safely, nothing imported or opened); one-line errors."""
    from kotae.pipeline.build import read_pipeline_yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KotaeError(
            f"pipeline file {path} cannot be read ({error.__class__.__name__}); "
            "write one with: kotae pipeline show > pipeline.yaml"
        ) from None
    data = read_pipeline_yaml(text)
    return PipelineFile(Path(path), data, pipeline_settings(data, str(path)))


def pipeline_settings(data: dict[str, Any], where: str = "pipeline YAML") -> dict[str, dict[str, Any]]:
    """The kotae config sections a pipeline mapping implies, from its components' classes (any names):
    the store (``index``), the question embedder, the retrievers and joiner weights, the reader.

    :raises KotaeError: If the pipeline has no kotae retriever (so no index to answer from).
    """
    components = {name: spec for name, spec in data.get("components", {}).items() if isinstance(spec, dict)}
    settings: dict[str, dict[str, Any]] = {"index": {}, "embedder": {}, "retriever": {}, "reader": {}}
    kinds = set()
    for spec in components.values():
        kind, parameters = spec.get("type", ""), spec.get("init_parameters") or {}
        if kind.startswith(RETRIEVERS):
            kinds.add("bm25" if kind.endswith("BM25Retriever") else "dense")
            settings["retriever"]["top_k"] = parameters.get("top_k", 10)
            if "tokenizer" in parameters:
                settings["index"]["bm25_tokenizer"] = parameters["tokenizer"]
            settings["index"].update(_store_settings(parameters.get("document_store") or {}))
        elif kind in EMBEDDERS:
            settings["embedder"].update(_embedder_settings(parameters))
        elif kind in READERS:
            settings["reader"].update(_reader_settings(READERS[kind], parameters))
        elif kind.endswith("DocumentJoiner") and parameters.get("weights"):
            settings["retriever"]["weights"] = list(parameters["weights"])
    if not kinds:
        raise KotaeError(
            f"{where} has no kotae retriever (KotaeEmbeddingRetriever or KotaeBM25Retriever), so no index "
            "to answer from; write one with: kotae pipeline show > pipeline.yaml"
        )
    settings["retriever"]["type"] = "hybrid" if len(kinds) == 2 else kinds.pop()
    return {section: values for section, values in settings.items() if values}


def _store_settings(store: dict[str, Any]) -> dict[str, Any]:
    kind, parameters = store.get("type", ""), store.get("init_parameters") or {}
    settings: dict[str, Any] = {"dir": str(parameters.get("path", "$KOTAE_HOME/index/default"))}
    if kind == STORES + "KotaeMilvusDocumentStore":
        settings.update(
            store="milvus",
            milvus_uri=parameters.get("uri"),
            milvus_collection=parameters.get("collection", "kotae"),
            milvus_index=parameters.get("index_type", "FLAT"),
        )
    else:
        settings.update(
            faiss_factory=parameters.get("faiss_factory", "Flat"), faiss_nprobe=parameters.get("nprobe", 16)
        )
    return settings


def _embedder_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    device = parameters.get("device")
    return {
        "model": str(parameters.get("model", "multilingual-e5-small")),
        "query_prefix": parameters.get("prefix", "query: "),
        "batch_size": parameters.get("batch_size", 32),
        "device": _device_name(device),
    }


def _reader_settings(kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
    if kind == "haystack":
        return {
            "type": "haystack",
            "model": str(parameters.get("model")),
            "top_k": parameters.get("top_k", 20),
            "no_answer": parameters.get("no_answer", True),
            "device": _device_name(parameters.get("device")),
        }
    keys = (
        "model", "top_k", "max_answer_length", "max_length", "stride", "max_question_length", "n_best",
        "no_answer", "no_answer_threshold", "batch_size", "device", "relative_scores",
        "retriever_weight", "retriever_evidence", "runtime",
    )  # fmt: skip
    return {"type": "kotae", **{key: parameters[key] for key in keys if key in parameters}}


def _device_name(device: Any) -> str | None:
    """A serialised ComponentDevice (or a plain string) as a torch device name; None for none."""
    if device is None or isinstance(device, str):
        return device
    from haystack.utils import ComponentDevice

    return str(ComponentDevice.from_dict(device).to_torch_str())

"""kotae's components as a Haystack integration: importable from ``haystack_integrations``, serialised under
those names, loaded back by Haystack's own ``Pipeline.loads`` with its default allow-list.

The documented example (docs/haystack.md, and the README's copy while it has one) runs exactly as
written, in a fresh interpreter (so nothing kotae imported earlier helps ``loads``) with an empty
``$KOTAE_HOME``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from kotae.errors import KotaeError
from kotae.pipeline.build import LEGACY_TYPES, build_pipeline, load_pipeline_yaml
from kotae.pipeline.config import load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "haystack.md", ROOT / "README.md")


def _python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file that use kotae's Haystack integration."""
    blocks = re.findall(r"^```python\n(.*?)^```$", path.read_text(encoding="utf-8"), re.S | re.M)
    return [block for block in blocks if "haystack_integrations" in block]


def test_the_documented_pipeline_runs_as_written(tmp_path: Path) -> None:
    blocks = {block for path in DOCS for block in _python_blocks(path)}
    assert _python_blocks(DOCS[0]), "docs/haystack.md shows the pipeline in Python"
    env = {**os.environ, "KOTAE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HAYSTACK_DESERIALIZATION_ALLOWLIST", None)  # Haystack's default allow-list only
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


def test_a_shown_pipeline_loads_with_haystack_alone_in_a_fresh_interpreter(tmp_path: Path) -> None:
    config = load_pipeline_config("default", [f"index.dir={tmp_path / 'index'}"])
    text = build_pipeline(config, check_models=False, open_index=False).dumps()
    types = {spec["type"] for spec in yaml.safe_load(text)["components"].values()}
    assert {kind.rpartition(".")[2] for kind in types} == {
        "KotaeQueryEmbedder",  # the shipped embedders need no sentence-transformers
        "KotaeEmbeddingRetriever",
        "KotaeBM25Retriever",
        "DocumentJoiner",
        "KotaeExtractiveReader",
    }
    assert all(kind.startswith(("haystack_integrations.", "haystack.")) for kind in types)
    script = (
        "import sys, yaml\n"
        "from haystack import Pipeline\n"
        "text = sys.stdin.read()\n"
        "assert Pipeline.loads(text).to_dict()['components'] == yaml.safe_load(text)['components']\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HAYSTACK_DESERIALIZATION_ALLOWLIST"}
    done = subprocess.run(
        [sys.executable, "-c", script], input=text, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def test_a_reader_alias_as_embedder_is_not_taken_for_a_plain_embedder(tmp_path: Path) -> None:
    """Without reading the model folder, only the shipped embedder aliases get kotae's query embedder;
    the reader alias gets the sentence-transformers path, as its prepared folder would."""
    from kotae.models import DEFAULT_READER
    from kotae.pipeline.build import query_embedder

    for model, expected in (
        ("multilingual-e5-small", "KotaeQueryEmbedder"),
        (DEFAULT_READER, "KotaeTextEmbedder"),
    ):
        config = load_pipeline_config("dense", [f"index.dir={tmp_path / 'index'}", f"embedder.model={model}"])
        assert type(query_embedder(config, check_models=False)).__name__ == expected


def test_the_names_are_kotaes_and_the_old_ones_still_work(tmp_path: Path) -> None:
    from haystack_integrations.components.readers.kotae import KotaeExtractiveReader
    from haystack_integrations.components.retrievers.kotae import KotaeBM25Retriever, KotaeEmbeddingRetriever
    from haystack_integrations.document_stores.kotae import KotaeDocumentStore, KotaeMilvusDocumentStore
    from kotae.indexing.bm25 import BM25Retriever
    from kotae.indexing.milvus_store import MilvusDocumentStore
    from kotae.indexing.retriever import FaissEmbeddingRetriever
    from kotae.indexing.store import FaissDocumentStore
    from kotae.pipeline.reader import KotaeExtractiveReader as same_reader

    assert FaissDocumentStore is KotaeDocumentStore and MilvusDocumentStore is KotaeMilvusDocumentStore
    assert FaissEmbeddingRetriever is KotaeEmbeddingRetriever and BM25Retriever is KotaeBM25Retriever
    assert same_reader is KotaeExtractiveReader
    for cls in (KotaeDocumentStore, KotaeMilvusDocumentStore, KotaeEmbeddingRetriever, KotaeBM25Retriever):
        assert cls.__name__.startswith("Kotae") and cls.__name__.lower() not in ("faissdocumentstore",)

    # YAML saved by an older kotae (types under kotae.*) still loads, as today's classes
    config = load_pipeline_config("bm25", [f"index.dir={tmp_path / 'index'}", "reader.model=some/reader"])
    text = build_pipeline(config, check_models=False).dumps()
    for new, old in ((new, old) for old, new in LEGACY_TYPES.items()):
        text = text.replace(f"type: {new}\n", f"type: {old}\n")
    assert "kotae.indexing.bm25.BM25Retriever" in text
    loaded = load_pipeline_yaml(text)
    assert isinstance(loaded.get_component("bm25_retriever"), KotaeBM25Retriever)
    assert isinstance(loaded.get_component("bm25_retriever").document_store, KotaeDocumentStore)
    try:
        load_pipeline_yaml(text.replace("kotae.indexing.bm25.BM25Retriever", "kotae.indexing.bm25.Nope"))
    except KotaeError as error:
        assert "allow-list" in str(error)
    else:
        raise AssertionError("an unknown kotae.* type was accepted")

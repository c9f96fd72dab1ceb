"""kotae's question embedder gives exactly sentence-transformers' vectors, without importing it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kotae.indexing.query_embedder import QueryEmbedder, plain_folder
from kotae.indexing.testing import build_tiny_model
from kotae.pipeline.build import build_pipeline, load_pipeline_yaml
from kotae.pipeline.testing import TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"
TEXTS = ["富士山の高さは？", "What is the capital of Japan?", "  spaces, ÉÈ and ①  ", "long " * 400, ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("query-embedder") / "embedder")


def test_the_same_vectors_as_sentence_transformers(folder: Path) -> None:
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersTextEmbedder,
    )

    assert plain_folder(folder)
    theirs = SentenceTransformersTextEmbedder(
        model=str(folder),
        prefix="query: ",
        progress_bar=False,
        normalize_embeddings=True,
        local_files_only=True,
    )
    theirs.warm_up()
    ours = QueryEmbedder(model=str(folder), prefix="query: ")
    ours.warm_up()
    for text in TEXTS:
        assert ours.run(text=text)["embedding"] == theirs.run(text=text)["embedding"], text


def test_other_folders_keep_sentence_transformers(folder: Path, tmp_path: Path) -> None:
    def variant(name: str, path: str, change: dict) -> Path:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        target = copy / path
        target.write_text(json.dumps({**json.loads(target.read_text(encoding="utf-8")), **change}))
        return copy

    pooling = json.loads((folder / "modules.json").read_text())[1]["path"]
    assert not plain_folder(variant("cls", f"{pooling}/config.json", {"pooling_mode_cls_token": True}))
    assert not plain_folder(variant("lower", "sentence_bert_config.json", {"do_lower_case": True}))
    assert not plain_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="trust_remote_code"):
        QueryEmbedder(model=str(folder), trust_remote_code=True)


def test_the_dense_pipeline_uses_it_and_round_trips(tmp_path: Path) -> None:
    setup: TinySetup = build_tiny_setup(tmp_path, index=False)
    pipeline = build_pipeline(setup.config(CONFIGS / "default.yaml"))
    embedder = pipeline.get_component("query_embedder")
    assert isinstance(embedder, QueryEmbedder) and embedder.prefix == "query: "
    again = load_pipeline_yaml(pipeline.dumps()).get_component("query_embedder")
    assert isinstance(again, QueryEmbedder) and again.to_dict() == embedder.to_dict()
    assert again.model_kwargs["use_safetensors"] is True and again.trust_remote_code is False

"""Everything that runs on kotae's store, on Milvus: the incremental job, ask, serve, feedback, eval.

One Milvus Lite gRPC server on 127.0.0.1 (the ``milvus_server`` fixture) is used the way a
deployment uses a Milvus cluster; each test writes its own collection. The same tiny corpus is also
indexed into kotae's default store, and both must give the same passages and answers.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("pymilvus", reason="the Milvus store needs kotae[milvus]")

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.indexing.bm25 import load_bm25
from kotae.indexing.job import run_index
from kotae.indexing.stores import open_store
from kotae.indexing.testing import HashEmbedder, build_tiny_model
from kotae.pipeline.config import PipelineConfig, load_pipeline_config
from kotae.pipeline.testing import QUESTIONS, ServedApp, TinySetup, build_tiny_setup

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "pipeline"
SENTENCES = ["東京は日本の首都です。", "富士山は日本一高い山である！", "Tokyo is the capital of Japan."]


def milvus_overrides(server: Any, collection: str) -> list[str]:
    return ["index.store=milvus", f"index.milvus_uri={server.uri}", f"index.milvus_collection={collection}"]


def _collection() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("milvus-qa"), index=False)


@pytest.fixture(scope="module")
def both(setup: TinySetup, milvus_server: Any) -> dict[str, list[str]]:
    """``--set`` overrides for the same corpus indexed into kotae's store and into Milvus."""
    kotae = [*setup.overrides]
    local = f"index.dir={json.dumps(str(setup.root / 'milvus-local'))}"  # BM25 cache, labels, lock
    milvus = [*setup.overrides, local, *milvus_overrides(milvus_server, _collection())]
    for overrides in (kotae, milvus):
        run_index(load_pipeline_config(None, overrides), [setup.corpus])
    return {"kotae": kotae, "milvus": milvus}


def test_incremental_reindex_embeds_only_changes_and_applies_deletions(
    tmp_path: Path, milvus_server: Any
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(10):
        body = "".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 10)))
        (corpus / f"doc{i:02d}.txt").write_text(f"文書{i}。{body}", encoding="utf-8")
    config = load_pipeline_config(
        None,
        [
            "index.passage_tokens=30",
            "index.overlap_tokens=5",
            *milvus_overrides(milvus_server, _collection()),
        ],
    )
    embedder = HashEmbedder()
    first = run_index(config, [corpus], tmp_path / "index", embedder=embedder)
    assert (first.added, first.passages_added) == (10, len(embedder.embedded)) and first.passages_total > 10

    embedder.embedded.clear()
    again = run_index(config, [corpus], tmp_path / "index", embedder=embedder)
    assert (again.unchanged, again.passages_added, embedder.embedded) == (10, 0, [])

    (corpus / "doc03.txt").write_text("編集された文書です。", encoding="utf-8")
    (corpus / "doc07.txt").unlink()
    store = open_store(config, tmp_path / "index")
    old = store.source_manifest()
    gone = old[str(corpus / "doc03.txt")][1] + old[str(corpus / "doc07.txt")][1]
    third = run_index(config, [corpus], tmp_path / "index", embedder=embedder)
    assert (third.updated, third.removed, third.unchanged) == (1, 1, 8)
    assert embedder.embedded == ["編集された文書です。"]
    manifest = store.source_manifest()
    assert str(corpus / "doc07.txt") not in manifest and store.get_documents_by_id(gone) == []
    assert store.check_consistency() == [] and store.count_documents() == third.passages_total
    assert set(load_bm25(store, config.index.bm25_tokenizer).ids) == {d.id for d in store.filter_documents()}
    edited = manifest[str(corpus / "doc03.txt")][1][0]
    vector = store.get_documents_by_id([edited], return_embedding=True)[0].embedding
    assert store.embedding_retrieval(vector, top_k=1)[0].id == edited
    store.close()

    full = run_index(config, [corpus], tmp_path / "index", full=True, embedder=embedder)
    assert (full.added, full.full, full.passages_total) == (9, True, third.passages_total)


@pytest.mark.parametrize("name", ["dense.yaml", "bm25.yaml", "default.yaml"])
def test_same_passages_and_answers_as_kotae_store(both: dict[str, list[str]], name: str) -> None:
    results = {}
    for store, overrides in both.items():
        args = ["ask", *QUESTIONS, "--json", "--top-k", "3", "--config", str(CONFIGS / name)]
        for override in overrides:
            args += ["--set", override]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        results[store] = [json.loads(line) for line in result.stdout.strip().splitlines()]
    for kotae, milvus in zip(results["kotae"], results["milvus"], strict=True):
        assert [(a["answer"], a["document_id"], a["start"]) for a in kotae["answers"]] == [
            (a["answer"], a["document_id"], a["start"]) for a in milvus["answers"]
        ]
        for left, right in zip(kotae["answers"], milvus["answers"], strict=True):
            assert left["score"] == pytest.approx(right["score"], abs=1e-4)


def test_filters_and_dense_scores_match(both: dict[str, list[str]]) -> None:
    from kotae.pipeline.build import build_components

    found = {}
    for store, overrides in both.items():
        config: PipelineConfig = load_pipeline_config(CONFIGS / "default.yaml", overrides)
        components = build_components(config)
        components["query_embedder"].warm_up()
        vector = components["query_embedder"].run(text="富士山の高さは？")["embedding"]
        only_fuji = {"field": "meta.title", "operator": "==", "value": "fuji"}
        dense = components["dense_retriever"].run(query_embedding=vector, top_k=4)["documents"]
        filtered = components["dense_retriever"].run(query_embedding=vector, filters=only_fuji)["documents"]
        bm25 = components["bm25_retriever"].run(query="富士山の高さは？", filters=only_fuji)["documents"]
        found[store] = (dense, filtered, bm25)
    for left, right in zip(found["kotae"], found["milvus"], strict=True):
        assert [d.id for d in left] == [d.id for d in right]
        assert [d.score for d in left] == pytest.approx([d.score for d in right], abs=1e-5)
    assert found["milvus"][1] and all(
        d.meta["title"] == "fuji" for d in found["milvus"][1] + found["milvus"][2]
    )


def test_serve_and_feedback_labels_point_at_milvus_passages(
    both: dict[str, list[str]], setup: TinySetup
) -> None:
    from kotae.pipeline.server import create_app

    config = load_pipeline_config(CONFIGS / "default.yaml", both["milvus"])
    store = open_store(config)
    with ServedApp(create_app(config)) as served, httpx.Client(base_url=served.url, timeout=60) as client:
        health = client.get("/health").json()
        assert health["passages"] == store.count_documents() > 0
        asked = client.post("/api/ask", json={"question": "富士山の高さは？", "top_k": 1}).json()
        passage = next(p for p in asked["passages"] if "3776" in p["text"])
        start = passage["text"].index("3776メートル")
        body = {
            "question": "富士山の高さは？",
            "verdict": "wrong",
            "passage_id": passage["passage_id"],
            "document_id": passage["document_id"],
            "corrected_start": start,
            "corrected_end": start + len("3776メートル"),
        }
        stored = client.post("/feedback", json=body)
        assert stored.status_code == 201, stored.text
        assert stored.json()["corrected"] == "3776メートル"
        assert client.post("/feedback", json={**body, "passage_id": "no-such-passage"}).status_code >= 400
    args = ["feedback", "list", "--json", "--config", str(CONFIGS / "default.yaml")]
    for override in both["milvus"]:
        args += ["--set", override]
    listed = CliRunner().invoke(app, args)
    assert listed.exit_code == 0, listed.output
    labels = [json.loads(line) for line in listed.stdout.strip().splitlines()]
    assert [(label["passage_id"], label.get("stale")) for label in labels] == [(passage["passage_id"], False)]
    assert store.get_documents_by_id([passage["passage_id"]])[0].content == passage["text"]
    store.close()


def _squad(setup: TinySetup, path: Path) -> Path:
    """The tiny corpus as a SQuAD file, one question per paragraph."""
    asked = {
        "fuji.txt": ("富士山の高さは？", "3776メートル"),
        "tokyo.txt": ("What is the capital of Japan?", "Tokyo"),
    }
    asked |= {
        "kyoto.md": ("京都はいつ都になりましたか？", "794年"),
        "rivers.txt": ("What is the longest river?", "The Shinano River"),
    }
    data = []
    for i, (name, (question, answer)) in enumerate(asked.items()):
        context = setup.texts[name]
        qa = {
            "id": f"q{i}",
            "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer)}],
        }
        data.append({"title": name, "paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


def test_eval_gives_the_same_recall_on_both_stores(
    setup: TinySetup, milvus_server: Any, tmp_path: Path
) -> None:
    data = _squad(setup, tmp_path / "tiny.json")
    collection = milvus_overrides(milvus_server, _collection())
    summaries = {}
    for store, extra in (("kotae", []), ("milvus", collection)):
        args = ["eval", "--config", str(CONFIGS / "default.yaml"), "--data", str(data), "--json"]
        args += ["--index-dir", str(tmp_path / f"index-{store}"), "--out", str(tmp_path / f"report-{store}")]
        for override in [*setup.overrides[:2], "index.passage_tokens=24", "index.overlap_tokens=4", *extra]:
            args += ["--set", override]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        summaries[store] = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("n", "recall@1", "recall@5", "recall@20", "mrr", "f1", "exact_match"):
        assert summaries["kotae"][key] == pytest.approx(summaries["milvus"][key]), key
    assert summaries["milvus"]["n"] == 4 and summaries["milvus"]["recall@20"] == 1.0


def test_config_keeps_credentials_out_and_names_bad_keys() -> None:
    from kotae.errors import KotaeError

    assert load_pipeline_config(None).index.store == "kotae"  # the default is unchanged
    for bad, key in (
        ("index.milvus_uri=http://root:secret@db:19530", "milvus_uri"),
        ("index.milvus_uri=http://db:19530?token=abc", "milvus_uri"),
        ("index.milvus_collection=my-collection", "milvus_collection"),
        ("index.store=qdrant", "store"),
    ):
        with pytest.raises(KotaeError, match=key) as error:
            load_pipeline_config(None, [bad])
        assert "\n" not in str(error.value)
    with pytest.raises(KotaeError, match="milvus_token"):
        load_pipeline_config(
            None, ["index.milvus_token=abc"]
        )  # no such key: tokens come from the environment


def test_milvus_lite_in_process_by_file_path(tmp_path: Path) -> None:
    """Without index.milvus_uri the collection lives in Milvus Lite's file in the index folder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("東京は日本の首都です。富士山は日本一高い山である！", encoding="utf-8")
    config = load_pipeline_config(
        None, ["index.store=milvus", f"index.dir={json.dumps(str(tmp_path / 'index'))}"]
    )
    summary = run_index(config, [corpus], embedder=HashEmbedder())
    assert summary.added == 1 and (tmp_path / "index" / "milvus.db").exists()
    store = open_store(config)
    assert store.count_documents() == summary.passages_total and store.check_consistency() == []
    store.close()


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    from kotae.errors import KotaeError
    from kotae.pipeline.testing import free_port

    config = load_pipeline_config(
        None, ["index.store=milvus", f"index.milvus_uri=http://127.0.0.1:{free_port()}"]
    )
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("東京。", encoding="utf-8")
    with pytest.raises(KotaeError, match=r"cannot connect to Milvus at http://127\.0\.0\.1") as error:
        run_index(config, [tmp_path / "corpus"], tmp_path / "index", embedder=HashEmbedder())
    assert "\n" not in str(error.value) and "KOTAE_MILVUS_TOKEN" in str(error.value)


def test_pipeline_yaml_round_trips_without_the_token(
    both: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kotae.indexing.milvus_store import MilvusDocumentStore
    from kotae.pipeline.build import build_pipeline, load_pipeline_yaml

    monkeypatch.setenv("KOTAE_MILVUS_TOKEN", "not-in-yaml")
    config = load_pipeline_config(CONFIGS / "default.yaml", both["milvus"])
    text = build_pipeline(config).dumps()
    assert (
        "not-in-yaml" not in text
        and "haystack_integrations.document_stores.kotae.KotaeMilvusDocumentStore" in text
    )
    loaded = load_pipeline_yaml(text)
    store = loaded.get_component("dense_retriever").document_store
    assert isinstance(store, MilvusDocumentStore) and store.uri == config.index.milvus_uri
    assert loaded.get_component("bm25_retriever").document_store.count_documents() > 0


def test_another_embedder_is_refused_for_a_milvus_index(
    setup: TinySetup, both: dict[str, list[str]], tmp_path: Path
) -> None:
    from kotae.pipeline.server import create_app

    other = build_tiny_model(tmp_path / "other", seed=1)
    config = load_pipeline_config(
        CONFIGS / "dense.yaml", [*both["milvus"], f"embedder.model={json.dumps(str(other))}"]
    )
    with pytest.raises(KotaeError, match="was built with embedder") as refused:
        create_app(config)
    assert str(setup.embedder.resolve()) in str(refused.value) and str(other) in str(refused.value)


def test_eval_never_writes_into_the_configs_collection(
    both: dict[str, list[str]], setup: TinySetup, tmp_path: Path
) -> None:
    """eval indexes its data set into a collection of its own, as it uses an index folder of its own."""
    store = open_store(load_pipeline_config(None, both["milvus"]))
    before = (store.source_manifest(), store.count_documents(), store.generation)
    args = [
        "eval",
        "--config",
        str(CONFIGS / "default.yaml"),
        "--data",
        str(_squad(setup, tmp_path / "tiny.json")),
    ]
    args += ["--json", "--index-dir", str(tmp_path / "eval-index"), "--out", str(tmp_path / "report")]
    for override in both["milvus"]:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["n"] == 4
    assert (store.source_manifest(), store.count_documents(), store.generation) == before
    store.close()

"""BM25 with Japanese-aware tokens, persisted next to the dense index."""

from __future__ import annotations

from pathlib import Path

import pytest
from haystack import Document

from kotae.indexing.bm25 import BM25_DIRNAME, BM25Index, BM25Retriever, bigram_tokenize, build_bm25, load_bm25
from kotae.indexing.store import FaissDocumentStore

TEXTS = {
    "fuji": "富士山は日本一高い山で、標高は3776メートルである。",
    "tokyo": "東京は日本の首都であり、最大の都市である。",
    "kyoto": "京都には古い寺や神社が多く、観光客に人気がある。",
    "english": "Mount Fuji is the highest mountain in Japan.",
}


@pytest.fixture
def store(tmp_path: Path) -> FaissDocumentStore:
    store = FaissDocumentStore(tmp_path / "index")
    store.write_documents(
        [Document(id=k, content=v, meta={"lang": "en" if k == "english" else "ja"}) for k, v in TEXTS.items()]
    )
    yield store
    store.close()


def test_bigram_tokens() -> None:
    assert bigram_tokenize("東京タワー") == ["東京", "京タ", "タワ", "ワー"]
    assert bigram_tokenize("Mt. FUJI, 3776m！山") == ["mt", "fuji", "3776m", "山"]
    assert bigram_tokenize("ＡＢＣ１２３") == ["abc123"]  # NFKC folds full-width forms
    assert bigram_tokenize("。、！") == []


def test_japanese_queries_find_the_right_passage(store: FaissDocumentStore) -> None:
    index = build_bm25(store)
    assert index.search("富士山の標高は？", top_k=1)[0][0] == "fuji"
    assert index.search("日本の首都はどこ", top_k=1)[0][0] == "tokyo"
    assert index.search("highest mountain", top_k=1)[0][0] == "english"
    assert index.search("ｚｚｚ", top_k=3) == []  # no known token
    assert (store.path / BM25_DIRNAME / "meta.json").exists()


def test_saved_index_is_reused_and_rebuilt_when_stale(store: FaissDocumentStore) -> None:
    build_bm25(store)
    loaded = load_bm25(store)
    assert loaded.generation == store.generation and len(loaded.ids) == 4
    store.write_documents([Document(id="osaka", content="大阪はたこ焼きで有名な都市だ。")])
    fresh = load_bm25(store)
    assert fresh.generation == store.generation
    assert fresh.search("たこ焼き", top_k=1)[0][0] == "osaka"
    assert BM25Index.load(store.path / BM25_DIRNAME).generation == store.generation


def test_retriever_component(store: FaissDocumentStore) -> None:
    retriever = BM25Retriever(store, top_k=2)
    documents = retriever.run(query="日本で一番高い山")["documents"]
    assert documents[0].id == "fuji" and documents[0].score > 0
    filtered = retriever.run(
        query="Fuji 富士山", filters={"field": "meta.lang", "operator": "==", "value": "en"}
    )
    assert [d.id for d in filtered["documents"]] == ["english"]
    clone = BM25Retriever.from_dict(retriever.to_dict())
    assert clone.to_dict() == retriever.to_dict()
    assert clone.run(query="京都の寺", top_k=1)["documents"][0].id == "kyoto"
    assert clone.run(query="京都", top_k=0)["documents"] == []
    with pytest.raises(ValueError, match="top_k"):
        BM25Retriever(store, top_k=0)
    with pytest.raises(ValueError, match="tokenizer"):
        BM25Retriever(store, tokenizer="whitespace")


def test_empty_store(tmp_path: Path) -> None:
    store = FaissDocumentStore(tmp_path)
    assert BM25Retriever(store).run(query="東京")["documents"] == []
    store.close()


def test_fugashi_tokenizer(store: FaissDocumentStore) -> None:
    pytest.importorskip("fugashi")
    pytest.importorskip("unidic_lite")
    from kotae.indexing.bm25 import fugashi_tokenize

    assert fugashi_tokenize("東京は日本の首都です。") == ["東京", "は", "日本", "の", "首都", "です"]
    retriever = BM25Retriever(store, tokenizer="fugashi")
    assert retriever.run(query="富士山の標高")["documents"][0].id == "fuji"

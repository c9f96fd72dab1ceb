"""BM25 that works for Japanese: character bigrams (or MeCab words) for CJK, lowercase words for Latin.

Haystack's default BM25 tokenises on ``\\w+``, which turns a whole Japanese sentence into a single
"word". Here text is NFKC-normalised and lowercased, runs of kanji/kana become overlapping
character bigrams (a run of one character stays a unigram) and everything else splits into
alphanumeric words. The ``fugashi`` tokenizer (MeCab + unidic-lite) uses morphological words
instead; ``bench/bench_retrieval.py`` compares both on JaQuAD dev, where fugashi is slightly better
and is therefore the default.

The index itself is bm25s (sparse-matrix BM25), saved in ``<index dir>/bm25/`` next to the dense
index, tagged with the store generation it was built from; a stale or missing index is rebuilt
from the store's passages.

Usage::

    index = load_bm25(store)              # builds it if needed
    index.search("富士山の高さは？", top_k=5)  # [(document id, score), ...]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from haystack import Document, component, default_to_dict
from haystack.document_stores.types import FilterPolicy, apply_filter_policy

from kotae.errors import KotaeError
from kotae.indexing.store import matches_filter
from kotae.indexing.stores import STORE_TYPES, IndexStore, retriever_from_dict
from kotae.japanese import mecab

Tokenizer = Callable[[str], list[str]]
TOKENIZERS = ("bigram", "fugashi")
#: MeCab words beat character bigrams on JaQuAD dev (recall@5 0.944 vs 0.934, MRR@20 0.845 vs 0.843;
#: bench/bench_retrieval.py), so they are the default; bigrams need no dictionary.
DEFAULT_TOKENIZER = "fugashi"
BM25_DIRNAME = "bm25"

_CJK = "\u3005\u3006\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_TOKEN = re.compile(rf"([{_CJK}]+)|((?:(?![{_CJK}])[^\W_])+)")


def bigram_tokenize(text: str) -> list[str]:
    """Character bigrams for CJK runs, lowercase alphanumeric words for the rest."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        cjk, word = match.group(1), match.group(2)
        if cjk:
            if len(cjk) == 1:
                tokens.append(cjk)
            else:
                tokens.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
        elif word:
            tokens.append(word)
    return tokens


def _tagger() -> Any:
    try:
        return mecab()
    except KotaeError as error:
        raise KotaeError(
            f"index.bm25_tokenizer 'fugashi': {error}, or set index.bm25_tokenizer=bigram"
        ) from None


def fugashi_tokenize(text: str) -> list[str]:
    """MeCab (unidic-lite) surface forms, lowercased, punctuation and spaces dropped."""
    tagger = _tagger()
    tokens: list[str] = []
    for word in tagger(unicodedata.normalize("NFKC", text)):
        pos = getattr(word.feature, "pos1", "") or ""
        if pos in ("補助記号", "空白"):
            continue
        surface = word.surface.lower().strip()
        if surface and _TOKEN.search(surface):
            tokens.append(surface)
    return tokens


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (``bigram`` or ``fugashi``)."""
    if name == "bigram":
        return bigram_tokenize
    if name == "fugashi":
        return fugashi_tokenize
    raise ValueError(f"bm25 tokenizer must be one of {', '.join(TOKENIZERS)}, but got {name!r}")


@dataclass
class BM25Index:
    """A bm25s index over documents ``ids``, built at store ``generation`` with ``tokenizer``."""

    ids: list[str]
    tokenizer: str
    generation: int
    retriever: Any

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], tokenizer: str, generation: int) -> BM25Index:
        import bm25s

        tokenize = get_tokenizer(tokenizer)
        retriever = None
        if ids:
            retriever = bm25s.BM25()
            retriever.index([tokenize(text) for text in texts], show_progress=False)
        return cls(ids=list(ids), tokenizer=tokenizer, generation=generation, retriever=retriever)

    def search(self, query: str, top_k: int = 10) -> list[tuple[str, float]]:
        """``(document id, BM25 score)`` of the best ``top_k`` documents with a positive score."""
        if self.retriever is None or top_k <= 0:
            return []
        vocab = self.retriever.vocab_dict
        tokens = [t for t in get_tokenizer(self.tokenizer)(query) if t in vocab]
        if not tokens:
            return []
        k = min(top_k, len(self.ids))
        found, scores = self.retriever.retrieve([tokens], k=k, show_progress=False, n_threads=1)
        return [(self.ids[int(i)], float(s)) for i, s in zip(found[0], scores[0], strict=True) if s > 0]

    def save(self, directory: Path) -> None:
        """Write to ``directory`` via a temporary folder, replacing any previous index."""
        directory = Path(directory)
        token = f"{uuid.uuid4().hex[:12]}.{os.getpid()}"  # unique per writer, also within one process
        temporary = directory.with_name(f"{directory.name}.{token}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        if self.retriever is not None:
            self.retriever.save(str(temporary / "bm25s"))
        meta = {"tokenizer": self.tokenizer, "generation": self.generation, "ids": self.ids}
        (temporary / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        old = directory.with_name(f"{directory.name}.{token}.old")
        if directory.exists():
            os.replace(directory, old)
        os.replace(temporary, directory)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        import bm25s

        meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
        retriever = None
        if meta["ids"]:
            retriever = bm25s.BM25.load(str(Path(directory) / "bm25s"))
        return cls(
            ids=meta["ids"],
            tokenizer=meta["tokenizer"],
            generation=int(meta["generation"]),
            retriever=retriever,
        )


def build_bm25(store: IndexStore, tokenizer: str = DEFAULT_TOKENIZER, save: bool = True) -> BM25Index:
    """Build the BM25 index over every passage in ``store`` and (by default) save it next to it."""
    generation = store.generation
    pairs = list(store.iter_contents())
    index = BM25Index.build([i for i, _ in pairs], [t for _, t in pairs], tokenizer, generation)
    if save:
        index.save(store.path / BM25_DIRNAME)
    return index


def load_bm25(store: IndexStore, tokenizer: str = DEFAULT_TOKENIZER) -> BM25Index:
    """The saved BM25 index if it matches the store's generation and tokenizer, else a rebuilt one."""
    directory = store.path / BM25_DIRNAME
    try:
        index = BM25Index.load(directory)
        if index.generation == store.generation and index.tokenizer == tokenizer:
            return index
    except (OSError, ValueError, KeyError):
        pass
    try:
        return build_bm25(store, tokenizer, save=True)
    except OSError:  # read-only index folder: keep the rebuilt index in memory only
        return build_bm25(store, tokenizer, save=False)


@component
class KotaeBM25Retriever:
    """Retrieves passages from a :class:`KotaeDocumentStore` by BM25 with Japanese-aware tokens.

    Importable as a Haystack integration (also its serialised ``type``); ``BM25Retriever`` in this
    module is its old name.

    ### Usage example
    ```python
    from haystack_integrations.components.retrievers.kotae import KotaeBM25Retriever
    from haystack_integrations.document_stores.kotae import KotaeDocumentStore

    retriever = KotaeBM25Retriever(KotaeDocumentStore("$KOTAE_HOME/index/default"), top_k=5)
    documents = retriever.run(query="富士山の高さは？")["documents"]
    ```
    """

    __module__ = "haystack_integrations.components.retrievers.kotae"  # its public home and serialised type

    def __init__(
        self,
        document_store: IndexStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        tokenizer: str = DEFAULT_TOKENIZER,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
    ) -> None:
        """
        Create the KotaeBM25Retriever.

        :param document_store: The store whose passages are searched; the BM25 index lives next to it.
        :param filters: Haystack filters applied to the retrieved documents.
        :param top_k: How many documents to return. Must be greater than 0.
        :param tokenizer: ``fugashi`` (MeCab words, the default) or ``bigram`` (character bigrams for CJK).
        :param filter_policy: How run-time filters combine with ``filters`` (REPLACE or MERGE).
        :raises TypeError: If ``document_store`` is not one of kotae's stores.
        :raises ValueError: If ``top_k`` is not greater than 0 or the tokenizer is unknown.
        """
        if not isinstance(document_store, STORE_TYPES):
            raise TypeError("document_store must be a KotaeDocumentStore or KotaeMilvusDocumentStore")
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        get_tokenizer(tokenizer)
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.tokenizer = tokenizer
        self.filter_policy = filter_policy
        self._index: BM25Index | None = None

    def _current_index(self) -> BM25Index:
        if self._index is None or self._index.generation != self.document_store.generation:
            self._index = load_bm25(self.document_store, self.tokenizer)
        return self._index

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component to a dictionary."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            tokenizer=self.tokenizer,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeBM25Retriever:
        """Deserialise the component from a dictionary."""
        return retriever_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """
        Retrieve the passages that best match ``query`` by BM25.

        :param query: The question or keywords.
        :param filters: Haystack filters; combined with the init filters by ``filter_policy``.
        :param top_k: How many documents to return (defaults to the init value).
        :returns: ``documents``, best first, each with its BM25 ``score``.
        """
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        top_k = self.top_k if top_k is None else top_k
        if top_k < 0:
            raise ValueError(f"top_k must be greater than or equal to 0, but got {top_k}")
        index = self._current_index()
        # With filters, look further down the ranking so that top_k survive the filter.
        hits = index.search(query, top_k if not filters else max(top_k * 20, 200))
        found = {d.id: d for d in self.document_store.get_documents_by_id([i for i, _ in hits])}
        documents: list[Document] = []
        for doc_id, score in hits:
            document = found.get(doc_id)
            if document is None or (filters and not matches_filter(filters, document)):
                continue
            documents.append(replace(document, score=score))
            if len(documents) >= top_k:
                break
        return {"documents": documents}


BM25Retriever = KotaeBM25Retriever  # the old name, for code that imports it

"""Dense retrieval over a :class:`KotaeDocumentStore` (or kotae's Milvus store), as a Haystack component.

Importable as a Haystack integration: ``from haystack_integrations.components.retrievers.kotae import
KotaeEmbeddingRetriever`` (its serialised ``type``). ``FaissEmbeddingRetriever`` is its old name.
"""

from __future__ import annotations

from typing import Any

from haystack import Document, component, default_to_dict
from haystack.document_stores.types import FilterPolicy, apply_filter_policy

from kotae.indexing.stores import STORE_TYPES, IndexStore, retriever_from_dict


@component
class KotaeEmbeddingRetriever:
    """Retrieves the passages whose embeddings are closest (cosine) to the query embedding.

    Use it with a KotaeDocumentStore filled by ``kotae index``; embed the query with the same model
    and its query prefix (``query: `` for E5), e.g. with a KotaeTextEmbedder.

    ### Usage example
    ```python
    from haystack import Pipeline
    from haystack_integrations.components.embedders.kotae import KotaeTextEmbedder
    from haystack_integrations.components.retrievers.kotae import KotaeEmbeddingRetriever
    from haystack_integrations.document_stores.kotae import KotaeDocumentStore

    store = KotaeDocumentStore("$KOTAE_HOME/index/default")
    pipeline = Pipeline()
    pipeline.add_component("embedder", KotaeTextEmbedder(model="multilingual-e5-small", prefix="query: "))
    pipeline.add_component("retriever", KotaeEmbeddingRetriever(store, top_k=5))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    result = pipeline.run({"embedder": {"text": "富士山の高さは？"}})
    ```
    """

    __module__ = "haystack_integrations.components.retrievers.kotae"  # its public home and serialised type

    def __init__(
        self,
        document_store: IndexStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool = False,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
    ) -> None:
        """
        Create the KotaeEmbeddingRetriever.

        :param document_store: The KotaeDocumentStore (or KotaeMilvusDocumentStore) to search.
        :param filters: Haystack filters narrowing the search.
        :param top_k: How many documents to return. Must be greater than 0.
        :param scale_score: Map cosine scores from [-1, 1] to [0, 1].
        :param return_embedding: Return the documents' embeddings too.
        :param filter_policy: How run-time filters combine with ``filters`` (REPLACE or MERGE).
        :raises TypeError: If ``document_store`` is not one of kotae's stores.
        :raises ValueError: If ``top_k`` is not greater than 0.
        """
        if not isinstance(document_store, STORE_TYPES):
            raise TypeError("document_store must be a KotaeDocumentStore or KotaeMilvusDocumentStore")
        if top_k <= 0:
            raise ValueError(f"top_k must be greater than 0, but got {top_k}")
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.scale_score = scale_score
        self.return_embedding = return_embedding
        self.filter_policy = filter_policy

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component to a dictionary."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            scale_score=self.scale_score,
            return_embedding=self.return_embedding,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeEmbeddingRetriever:
        """Deserialise the component from a dictionary."""
        return retriever_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
        return_embedding: bool | None = None,
    ) -> dict[str, list[Document]]:
        """
        Retrieve the documents most similar to ``query_embedding``.

        :param query_embedding: Embedding of the query.
        :param filters: Haystack filters; combined with the init filters by ``filter_policy``.
        :param top_k: How many documents to return (defaults to the init value); 0 returns none.
        :param scale_score: Map cosine scores to [0, 1] (defaults to the init value).
        :param return_embedding: Return embeddings (defaults to the init value).
        :returns: ``documents``, most similar first, each with its cosine ``score``.
        :raises ValueError: If ``top_k`` is negative.
        """
        filters = apply_filter_policy(self.filter_policy, self.filters, filters)
        top_k = self.top_k if top_k is None else top_k
        if top_k < 0:
            raise ValueError(f"top_k must be greater than or equal to 0, but got {top_k}")
        documents = self.document_store.embedding_retrieval(
            query_embedding=query_embedding,
            filters=filters,
            top_k=top_k,
            scale_score=self.scale_score if scale_score is None else scale_score,
            return_embedding=self.return_embedding if return_embedding is None else return_embedding,
        )
        return {"documents": documents}


FaissEmbeddingRetriever = KotaeEmbeddingRetriever  # the old name, for code that imports it

"""The question embedder as a Haystack component: sentence-transformers' text embedder on a kotae model.

:class:`KotaeTextEmbedder` is Haystack's ``SentenceTransformersTextEmbedder`` with three differences,
so that a pipeline YAML carries no machine's paths or devices and loads models only safely:

- ``model`` may be a kotae alias (``multilingual-e5-small``) or a folder; it is resolved to the
  prepared folder (:func:`kotae.indexing.embedder.resolve_embedder_dir`) on warm-up, and written back
  as given by ``to_dict``;
- ``device`` is written back as given (None: chosen when the model loads, CUDA when available);
- models load from local files, safetensors only, without code from the folder, unless told otherwise
  (and :func:`kotae.pipeline.build.load_pipeline_yaml` refuses to be told otherwise).
"""

from __future__ import annotations

from typing import Any

from haystack import component
from haystack.utils import ComponentDevice
from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder


@component
class KotaeTextEmbedder(SentenceTransformersTextEmbedder):
    """Embeds a question with a kotae embedder model (an alias or a folder), for the dense retriever.

    Importable as a Haystack integration, ``from haystack_integrations.components.embedders.kotae
    import KotaeTextEmbedder``; serialised as ``haystack_integrations.components.embedders.kotae.
    sentence_transformers.KotaeTextEmbedder``, so pipelines without it never import sentence-transformers.

    ### Usage example
    ```python
    from haystack_integrations.components.embedders.kotae import KotaeTextEmbedder

    embedder = KotaeTextEmbedder(model="multilingual-e5-small", prefix="query: ")
    embedder.warm_up()
    vector = embedder.run(text="富士山の高さは？")["embedding"]
    ```
    """

    __module__ = "haystack_integrations.components.embedders.kotae.sentence_transformers"  # its public home and serialised type

    def __init__(
        self,
        model: str = "multilingual-e5-small",
        device: ComponentDevice | None = None,
        prefix: str = "query: ",
        batch_size: int = 32,
        progress_bar: bool = False,
        normalize_embeddings: bool = True,
        trust_remote_code: bool = False,
        local_files_only: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Create the embedder; the model is resolved and loaded in :meth:`warm_up`.

        :param model: A kotae embedder alias or a sentence-transformers folder.
        :param device: Torch device; None picks one when the model loads.
        :param prefix: Text put before the question (``query: `` for E5).
        :param kwargs: Any other ``SentenceTransformersTextEmbedder`` parameter.
        """
        # The parent named explicitly: @component rebuilds the class, so super() would not find it.
        SentenceTransformersTextEmbedder.__init__(
            self,
            model=model,
            device=device,
            prefix=prefix,
            batch_size=batch_size,
            progress_bar=progress_bar,
            normalize_embeddings=normalize_embeddings,
            trust_remote_code=trust_remote_code,
            local_files_only=local_files_only,
            model_kwargs=model_kwargs if model_kwargs is not None else {"use_safetensors": True},
            **kwargs,
        )
        self.model_reference = model
        self.chosen_device = device

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component: the model and device as given, not as resolved on this machine."""
        data = SentenceTransformersTextEmbedder.to_dict(self)
        parameters = data["init_parameters"]
        parameters["model"] = self.model_reference
        parameters["device"] = self.chosen_device.to_dict() if self.chosen_device else None
        return data

    def warm_up(self) -> None:
        """Resolve the model to its prepared folder (safetensors required), then load it."""
        if self.embedding_backend is None:
            from kotae.indexing.embedder import resolve_embedder_dir
            from kotae.model_files import require_safetensors

            folder = resolve_embedder_dir(self.model_reference)
            require_safetensors(folder, "embedder")
            self.model = str(folder)
        SentenceTransformersTextEmbedder.warm_up(self)

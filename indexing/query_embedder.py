"""The question embedder of a dense pipeline, without sentence-transformers: a Haystack component.

A sentence-transformers folder whose modules are a Transformer, mean pooling and (optionally)
normalisation — multilingual-e5-small and all-MiniLM-L6-v2 are — is computed here with the folder's
``tokenizer.json`` (the ``tokenizers`` library) and transformers' ``AutoModel``: the same tokens, the
same forward pass and the same pooling arithmetic, so the same vectors as
``SentenceTransformersTextEmbedder`` (``tests/test_query_embedder.py`` checks it). Importing
sentence-transformers (and the scikit-learn it pulls in) is most of the cold start of ``kotae ask``,
so :func:`plain_folder` decides when this lighter path is exact; other folders keep Haystack's embedder.

### Usage example
```python
from haystack_integrations.components.embedders.kotae import KotaeQueryEmbedder

embedder = KotaeQueryEmbedder(model="multilingual-e5-small", prefix="query: ")
embedder.warm_up()
vector = embedder.run(text="富士山の高さは？")["embedding"]
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from haystack import component, default_from_dict, default_to_dict

TRANSFORMER = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.base.modules.transformer.Transformer",
}
POOLING = {
    "sentence_transformers.models.Pooling",
    "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
}
NORMALIZE = {
    "sentence_transformers.models.Normalize",
    "sentence_transformers.base.modules.normalize.Normalize",
}
"""Module names in ``modules.json``, as sentence-transformers before and since version 6 writes them."""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def plain_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a Transformer + mean pooling (+ Normalize) model with a ``tokenizer.json``,
    no default prompt and no lower-casing: the models :class:`QueryEmbedder` computes exactly."""
    folder = Path(folder)
    modules = _read(folder / "modules.json")
    if not isinstance(modules, list) or not (folder / "tokenizer.json").is_file():
        return False
    kinds = [module.get("type") if isinstance(module, dict) else None for module in modules]
    shape = [kind in TRANSFORMER for kind in kinds[:1]] + [kind in POOLING for kind in kinds[1:2]]
    shape += [kind in NORMALIZE for kind in kinds[2:]]
    if len(kinds) not in (2, 3) or not all(shape) or modules[0].get("path"):
        return False
    pooling = _read(folder / str(modules[1].get("path", "")) / "config.json") or {}
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode_") and value}
    mean = modes == {"pooling_mode_mean_tokens"} or (not modes and pooling.get("pooling_mode") == "mean")
    settings = _read(folder / "sentence_bert_config.json") or {}
    prompts = _read(folder / "config_sentence_transformers.json") or {}
    return (
        mean
        and pooling.get("include_prompt", True) is True
        and not settings.get("do_lower_case")
        and not prompts.get("default_prompt_name")
        and max_length(folder) is not None
    )


def max_length(folder: Path) -> int | None:
    """The token limit sentence-transformers truncates to: ``sentence_bert_config.json``'s
    ``max_seq_length``, else the tokenizer's ``model_max_length``; None when neither says."""
    settings = _read(folder / "sentence_bert_config.json") or {}
    tokenizer = _read(folder / "tokenizer_config.json") or {}
    for value in (settings.get("max_seq_length"), tokenizer.get("model_max_length")):
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    return None


@component
class KotaeQueryEmbedder:
    """Embeds one text with a plain sentence-transformers model (see :func:`plain_folder`): a kotae
    alias or a folder, resolved on warm-up and written back as given by ``to_dict``.

    Importable as a Haystack integration, ``from haystack_integrations.components.embedders.kotae
    import KotaeQueryEmbedder`` (also its serialised ``type``).
    """

    __module__ = "haystack_integrations.components.embedders.kotae"  # its public home and serialised type

    def __init__(
        self,
        model: str,
        prefix: str = "",
        normalize_embeddings: bool = True,
        device: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        """
        Create the embedder; the model loads in :meth:`warm_up`.

        :param model: A kotae embedder alias or a model folder that :func:`plain_folder` accepts.
        :param prefix: Text put before every input (``"query: "`` for e5).
        :param normalize_embeddings: Scale the vector to unit length (after the folder's own Normalize).
        :param device: Torch device; None picks CUDA when available, else the CPU.
        :param model_kwargs: More ``from_pretrained`` arguments; weights load from safetensors whatever they say.
        :param trust_remote_code: Must be False: no code runs from a model folder.
        :raises ValueError: If ``trust_remote_code`` is True.
        """
        if trust_remote_code:
            raise ValueError("trust_remote_code must be False: kotae runs no code from model folders")
        self.model = model
        self.prefix = prefix
        self.normalize_embeddings = normalize_embeddings
        self.device = device
        self.model_kwargs = dict(model_kwargs or {})
        self.trust_remote_code = trust_remote_code
        self._tokenizer: Any = None
        self._model: Any = None
        self._normalizations = 0

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            prefix=self.prefix,
            normalize_embeddings=self.normalize_embeddings,
            device=self.device,
            model_kwargs=self.model_kwargs,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KotaeQueryEmbedder:
        """Deserialise the component from a dictionary."""
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        """Load the tokenizer and the weights (safetensors only, no code from the folder), once."""
        if self._model is not None:
            return
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from kotae.indexing.embedder import resolve_embedder_dir
        from kotae.model_files import SAFE_MODEL_KWARGS, require_safetensors

        folder = resolve_embedder_dir(self.model)
        require_safetensors(folder, "embedder")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        limit = max_length(folder)
        if limit:
            tokenizer.enable_truncation(limit)
        else:
            tokenizer.no_truncation()
        model = AutoModel.from_pretrained(str(folder), **{**self.model_kwargs, **SAFE_MODEL_KWARGS})
        model.to(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval()
        modules = _read(folder / "modules.json") or []
        self._normalizations = sum(1 for module in modules if module.get("type") in NORMALIZE)
        self._tokenizer, self._model = tokenizer, model

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, list[float]]:
        """
        Embed ``text`` (with the prefix).

        :param text: The text to embed.
        :returns: ``embedding``: the vector, as sentence-transformers computes it for this folder.
        """
        import torch
        import torch.nn.functional as F

        if not isinstance(text, str):
            raise TypeError("QueryEmbedder expects a string as input")
        self.warm_up()
        encoded = self._tokenizer.encode(self.prefix + text)
        device = next(self._model.parameters()).device
        ids = torch.tensor([encoded.ids], device=device)
        mask = torch.tensor([encoded.attention_mask], device=device)
        with torch.inference_mode():
            tokens = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            expanded = mask.unsqueeze(-1).expand(tokens.size()).to(tokens.dtype)
            pooled = torch.sum(tokens * expanded, 1) / torch.clamp(expanded.sum(1), min=1e-9)
            for _ in range(self._normalizations):
                pooled = F.normalize(pooled, p=2, dim=1)
            if self.normalize_embeddings:
                pooled = F.normalize(pooled, p=2, dim=1)
        vector: list[float] = pooled[0].float().cpu().numpy().tolist()
        return {"embedding": vector}


QueryEmbedder = KotaeQueryEmbedder  # the name inside kotae

"""The passage embedder the indexing job uses: a sentence-transformers model folder, loaded lazily.

:func:`load_embedder` builds it from a config's ``embedder`` section; :func:`resolve_embedder_dir`
turns a folder or a kotae model alias into the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kotae.indexing.settings import IndexJobConfig

__all__ = ["SentenceTransformerEmbedder", "load_embedder", "resolve_embedder_dir"]


class SentenceTransformerEmbedder:
    """Passages embedded by a sentence-transformers model folder, with a passage prefix, normalised.

    The model is loaded on first use, so a re-run with nothing to embed never loads it; token counts
    and the length limit need only the folder's tokenizer and ``sentence_bert_config.json`` (so a
    Ray driver never loads the weights). A pickled copy carries neither model nor tokenizer.
    """

    def __init__(
        self, model_dir: Path, prefix: str = "", batch_size: int = 32, device: str | None = None
    ) -> None:
        self.model_dir = Path(model_dir)
        self.prefix = prefix
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    @property
    def fingerprint(self) -> str:
        return f"{self.model_dir.resolve()}|{self.prefix}"

    @property
    def model(self) -> Any:
        if self._model is None:
            from kotae.model_files import load_sentence_transformer

            self._model = load_sentence_transformer(self.model_dir, self.device)  # safetensors only
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The folder's tokenizer (the one the model loads), without the weights when it is at the
        folder's top level (else the model's own)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            except (OSError, ValueError):
                self._tokenizer = self.model.tokenizer
        return self._tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest passage (in tokens, without special tokens and prefix) the model reads whole."""
        prefix_tokens = self.count_tokens(self.prefix) if self.prefix else 0
        settings = self.model_dir / "sentence_bert_config.json"
        length = (
            json.loads(settings.read_text(encoding="utf-8")).get("max_seq_length")
            if settings.is_file()
            else None
        )
        if self._model is not None or not length:
            length = self.model.max_seq_length
        return int(length or 512) - 2 - prefix_tokens

    def count_tokens(self, text: str) -> int:
        return len(
            self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            [self.prefix + text for text in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def resolve_embedder_dir(ref: str) -> Path:
    """A local sentence-transformers folder for ``ref``: a directory, or a kotae model alias."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    from kotae.models import resolve_model

    return Path(resolve_model(ref))


def load_embedder(config: IndexJobConfig) -> SentenceTransformerEmbedder:
    """The embedder described by the config's ``embedder`` section."""
    section = config.embedder
    return SentenceTransformerEmbedder(
        resolve_embedder_dir(section.model), section.passage_prefix, section.batch_size, section.device
    )

"""Readers shipped as the weights training changed, completed at prepare time from the base model.

A reader fine-tuned from ``multilingual-e5-small`` with frozen word embeddings differs from its base
in every tensor but the 250k x 384 word-embedding matrix, which is 80 % of the model. kotae ships
only the other tensors, in fp16, beside a ``delta.json`` that names the base and its source file;
``kotae models prepare`` puts the base's embedding matrix back and writes a complete, standard
``BertForQuestionAnswering`` folder (float32 safetensors, the base's tokenizer, ``reader_config.json``,
``span_edges.json``, ``model_card.md``) that kotae's reader, ``kotae evaluate`` and Haystack's
``TransformersExtractiveReader`` all load.

Writing the delta is a training-side step, :func:`kotae.reader_training.export.export_delta`;
this module reads it back::

    materialise(WEIGHTS_DIR / "reader-e5-small-ja-en", base_folder, target)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from kotae.weight_files import HF_WORD_EMBEDDINGS, sha256

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DELTA_FILE = "delta.json"
BASE_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SPAN_EDGES_FILE = "span_edges.json"  # kotae.reader_training.edges: where edges may move inside edge tokens
SHIPPED_CARD = (
    "model_card.md"  # the shipped reader's card (a training run writes README.md; export renames it)
)
CARRIED_FILES = ("config.json", "reader_config.json", SPAN_EDGES_FILE, SHIPPED_CARD)


def base_source(base_folder: Path) -> str | None:
    """Where a prepared base folder came from (its ``kotae-prepared.json`` stamp), if stamped."""
    stamp = base_folder / "kotae-prepared.json"
    return json.loads(stamp.read_text())["source"] if stamp.is_file() else None


def base_word_embeddings(base_folder: Path) -> np.ndarray:
    """The word-embedding matrix of a prepared base (BertModel) or reader folder, as float32."""
    from safetensors import safe_open

    with safe_open(str(base_folder / "model.safetensors"), framework="numpy") as handle:
        keys = set(handle.keys())
        for key in (BASE_WORD_EMBEDDINGS, HF_WORD_EMBEDDINGS):
            if key in keys:
                return np.asarray(handle.get_tensor(key), dtype=np.float32)
    raise KotaeError(f"{base_folder / 'model.safetensors'} has no word-embedding matrix")


def delta_version(delta_dir: Path) -> str:
    """A digest of a shipped delta's small files (``delta.json`` holds every shard's sha256), so a
    prepared reader is rebuilt when kotae ships new weights, settings or card."""
    digest = hashlib.sha256()
    for name in (DELTA_FILE, *CARRIED_FILES):
        path = delta_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    return digest.hexdigest()[:16]


def read_delta(delta_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``delta.json`` and the shipped tensors, each file checked against its recorded sha256."""
    from safetensors.numpy import load_file

    path = delta_dir / DELTA_FILE
    if not path.is_file():
        raise KotaeError(f"{path} is missing; reinstall kotae (pip install -e .)")
    delta = json.loads(path.read_text(encoding="utf-8"))
    tensors: dict[str, np.ndarray] = {}
    for entry in delta["files"]:
        file = delta_dir / entry["file"]
        if not file.is_file() or sha256(file) != entry["sha256"]:
            raise KotaeError(f"{file} is missing or damaged (sha256 mismatch); reinstall kotae")
        tensors.update(load_file(str(file)))
    return delta, tensors


def materialise(delta_dir: Path, base_folder: Path, target: Path) -> str:
    """Fill ``target`` with the complete reader: the base's word embeddings plus the shipped tensors."""
    from safetensors.numpy import save_file

    delta, tensors = read_delta(delta_dir)
    source = base_source(base_folder)
    if delta.get("base_source") and source and source != delta["base_source"]:
        raise KotaeError(f"{base_folder} was prepared from {source}, the reader from {delta['base_source']}")
    state = {HF_WORD_EMBEDDINGS: base_word_embeddings(base_folder)}
    state.update({name: value.astype(np.float32) for name, value in tensors.items()})
    target.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (base_folder / name).is_file():
            shutil.copy2(base_folder / name, target / name)
    for name in CARRIED_FILES:
        if (delta_dir / name).is_file():
            shutil.copy2(delta_dir / name, target / name)
    return prepared_source(delta_dir.name, delta["base"])


def prepared_source(name: str, base: str) -> str:
    """The ``source`` that a prepared reader's ``kotae-prepared.json`` stamp records for the delta
    ``name`` over ``base``."""
    return f"{name} (fp16 delta) + {base} word embeddings"

"""The device bundle: what travels to a lent GPU machine to train the reader there, and what comes back.

Written by :mod:`kotae.reader_training.device.pack` (here, full kotae environment), read by
:mod:`kotae.reader_training.device.train` (there: torch, transformers, numpy, safetensors and the standard
library only — so this module imports numpy, the standard library and :mod:`kotae.weight_files`
(standard library only) at the top, and safetensors and :mod:`kotae.e5s1` (numpy-only) inside functions).

A bundle is one folder (``.device/bundle/`` by default, ignored by git, carried with ``carry``)::

    bundle.json          format, hyperparameters, model config, tensor directory, data reports,
                         every other file's size and sha256
    base.safetensors     the E5S1 encoder tensors except the word embeddings, as their raw bytes
                         (uint8): Q4_0 blocks for the matrices, float32 for the rest — bit-exact
                         and smaller than any float copy (13 MB for multilingual-e5-small). Absent
                         when the run continues a reader kotae ships (``base_model:
                         reader-e5-small-ja-en``): its fp16 tensors are tracked files of the
                         repository (``kotae/weights/NAME/``), which travels anyway, and
                         ``bundle.json`` → ``base.delta`` names them and their sha256
    vocab-NNN.safetensors  ``used_ids`` (int32, sorted real token ids that occur in the features)
                         and ``word_rows`` (uint8, one Q4_0 row of 12 blocks x 18 bytes per id)
    features-NNN.npz     windows (``features-NAME-NNN.npz`` for a variant), compressed: ``tokens`` (compact ids, index into ``used_ids``;
                         uint16 when under 65,536 ids are used), ``lengths``, ``start_positions``,
                         ``end_positions`` (and ``token_type_ids`` for tokenizers that make them)
    dev-NNN.jsonl.gz     optional: the validated dev questions, one JSON record per line, with
    tokenizer.json.gz,   the base's tokenizer files, so the device scores the dev sets with
    tokenizer_config.json, special_tokens_map.json   kotae's own evaluation code (their token
                         ids are in ``used_ids`` too)

Word embeddings are frozen in device training, so only the rows of ids that occur travel; on the
device they are dequantised with :func:`kotae.e5s1.dequantize_q4_0` — the same arithmetic the
prepared base went through here — and the other rows stay zero (never looked up).

What comes back (written by :mod:`kotae.reader_training.device.train` into ``$OUT``): ``weights-N.safetensors`` (fp16, every
trained parameter but the word embeddings, at most :data:`MAX_FILE_BYTES` each),
``run.json`` (steps, speed, device, the bundle's config and data reports) and ``train_log.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kotae.weight_files import MAX_FILE_BYTES, sha256

FORMAT = "kotae-device-bundle/1"
MANIFEST = "bundle.json"
BASE_FILE = "base.safetensors"
RUN_FILE = "run.json"
LOG_FILE = "train_log.jsonl"
WORD_TENSOR = "emb.word"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_GZ = "tokenizer.json.gz"
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")
TRAVEL_BYTES = 64 * 1024 * 1024
"""What travels to the device in one call: the working tree (tracked and untracked-not-ignored
files) and the carried bundle together."""


def row_slices(n_rows: int, bytes_per_row: int, limit: int = MAX_FILE_BYTES) -> list[slice]:
    """Split ``n_rows`` rows into consecutive slices of at most ``limit`` bytes each (at least one)."""
    per_file = max(1, limit // max(1, bytes_per_row))
    return [slice(s, min(s + per_file, n_rows)) for s in range(0, max(n_rows, 1), per_file)]


def window_slices(lengths: np.ndarray, token_bytes: int, limit: int = MAX_FILE_BYTES) -> list[slice]:
    """Split windows into consecutive groups whose raw bytes (tokens + 6 per window) stay under ``limit``."""
    sizes = lengths.astype(np.int64) * token_bytes + 6
    slices: list[slice] = []
    first, total = 0, 0
    for index, size in enumerate(sizes.tolist()):
        if total + size > limit and index > first:
            slices.append(slice(first, index))
            first, total = index, 0
        total += size
    slices.append(slice(first, len(sizes)))
    return slices


@dataclass
class Features:
    """Training windows as flat arrays: window ``i`` is ``tokens[offsets[i]:offsets[i] + lengths[i]]``."""

    tokens: np.ndarray  # compact ids (index into Bundle.used_ids)
    lengths: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    token_type_ids: np.ndarray | None = None  # flat like tokens, when the tokenizer makes them

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths[:-1], dtype=np.int64)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class Bundle:
    manifest: dict[str, Any]
    features: Features
    used_ids: np.ndarray  # int32, sorted real token ids
    word_rows: np.ndarray  # uint8 (n_used, bytes per Q4_0 row)
    base_tensors: dict[str, np.ndarray]  # E5S1 name -> raw uint8 bytes
    variant: str | None = None

    @property
    def section(self) -> dict[str, Any]:
        """The manifest part of the chosen training set: ``train_config``, ``features``, ``data``,
        ``config_path`` and ``overrides`` (the main config's, or a variant's)."""
        return self.manifest if self.variant is None else self.manifest["variants"][self.variant]

    @property
    def train_config(self) -> dict[str, Any]:
        return dict(self.section["train_config"])


class BundleError(Exception):
    """A bundle that is missing, incomplete or corrupt: one line naming the file."""


def read_bundle(folder: str | Path, verify: bool = True, variant: str | None = None) -> Bundle:
    """Load a bundle (the main config's windows, or those of ``variant``); with ``verify``, every
    file's size and sha256 are checked against the manifest."""
    from safetensors.numpy import load_file

    root = Path(folder)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{manifest_path} not found; make the bundle with python -m kotae.reader_training.device.pack"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name, info in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path} is missing from the bundle (was .device carried?)")
        if path.stat().st_size != info["bytes"] or (verify and sha256(path) != info["sha256"]):
            raise BundleError(f"{path} differs from {MANIFEST} (size or sha256): the copy is incomplete")

    variants = manifest.get("variants", {})
    if variant is not None and variant not in variants:
        raise BundleError(
            f"{manifest_path}: no variant {variant!r} (packed: {', '.join(variants) or 'none'})"
        )
    section = manifest if variant is None else variants[variant]
    parts: dict[str, list[np.ndarray]] = {}
    for name in section["features"]["files"]:
        with np.load(root / name) as data:
            for key in data.files:
                parts.setdefault(key, []).append(data[key])
    joined = {key: np.concatenate(values) for key, values in parts.items()}
    features = Features(
        tokens=joined["tokens"],
        lengths=joined["lengths"],
        start_positions=joined["start_positions"],
        end_positions=joined["end_positions"],
        token_type_ids=joined.get("token_type_ids"),
    )
    used, rows = [], []
    for name in manifest["vocab"]["files"]:
        loaded = load_file(str(root / name))
        used.append(loaded["used_ids"])
        rows.append(loaded["word_rows"])
    base = load_file(str(root / BASE_FILE)) if BASE_FILE in manifest["files"] else {}
    return Bundle(manifest, features, np.concatenate(used), np.concatenate(rows), base, variant)


def used_word_rows(bundle: Bundle) -> np.ndarray:
    """The used ids' word embeddings, ``(n_used, hidden)`` float32, dequantised from the bundle's
    Q4_0 rows by :func:`kotae.e5s1.dequantize_q4_0` (the arithmetic of the prepared base)."""
    from kotae.e5s1 import dequantize_q4_0

    hidden = int(bundle.manifest["base"]["header"]["hidden"])
    rows = np.ascontiguousarray(bundle.word_rows)
    return dequantize_q4_0(rows.reshape(-1).data, len(bundle.used_ids) * hidden).reshape(-1, hidden)


def encoder_state_dict(bundle: Bundle) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """BertModel state dict (float32) from the bundle, word embeddings for the used ids only.

    Returns ``(state, used_rows)``: ``state`` has no word-embedding entry; ``used_rows`` is
    ``(n_used, hidden)``, row ``k`` being the embedding of token ``used_ids[k]``. Dequantised by
    :func:`kotae.e5s1.bert_state_dict` itself (with the vocabulary cut down to the used rows), so
    every value is what the prepared base holds.
    """
    from kotae.e5s1 import E5File, E5Header, bert_state_dict

    base = bundle.manifest["base"]
    header = E5Header(**base["header"])
    header = replace(header, vocab=len(bundle.used_ids))
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for name, info in bundle.manifest["tensors"].items():
        tensors[name] = (
            int(info["dtype"]),
            int(info["count"]),
            np.ascontiguousarray(bundle.base_tensors[name]).data,
        )
    word = np.ascontiguousarray(bundle.word_rows)
    tensors[WORD_TENSOR] = (1, len(bundle.used_ids) * header.hidden, word.reshape(-1).data)
    e5 = E5File(header, [], np.zeros(0, np.float32), dict(base["special_ids"]), {}, tensors)
    state = bert_state_dict(e5)
    used_rows = state.pop("embeddings.word_embeddings.weight")
    return state, used_rows


def read_dev_sets(folder: str | Path, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The bundle's dev sets as raw records (label -> records), empty when it has none."""
    import gzip

    result: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest.get("dev", {}).get("sets", []):
        with gzip.open(Path(folder) / entry["file"], "rt", encoding="utf-8") as handle:
            result[entry["label"]] = [json.loads(line) for line in handle if line.strip()]
    return result


def extract_tokenizer(folder: str | Path, target: Path) -> Path:
    """Write the bundle's tokenizer files (tokenizer.json unzipped) into ``target``; returns it."""
    import gzip
    import shutil

    source = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(source / TOKENIZER_GZ, "rb") as packed, (target / TOKENIZER_JSON).open("wb") as out:
        shutil.copyfileobj(packed, out)
    for name in TOKENIZER_SIDE_FILES:
        shutil.copy2(source / name, target / name)
    return target


def returned_weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("weights-*.safetensors"))

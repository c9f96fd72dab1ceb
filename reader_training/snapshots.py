"""Snapshots of a long training run, and readers made from them (one snapshot, or the mean of several).

With ``snapshot_steps: N`` in a training config, every N steps the run keeps the tensors training
changes (every parameter with a gradient; the frozen word embeddings are left out, so a snapshot of
multilingual-e5-small's reader is 86 MB in fp32) as ``output_dir/snapshots/step-000250.safetensors``.
Trainer's checkpoints rotate (``save_total_limit``); snapshots stay, so a run's whole learning curve
can be measured afterwards, and its last snapshots averaged (checkpoint averaging: the mean of the
weights along the end of a run often scores above its last point).

A snapshot is not a reader by itself: :func:`materialise` lays it over a complete reader folder of
the same architecture (the *frame*: the run's base model or its finished output) and writes a
folder that ``kotae evaluate`` and every pipeline load. Usage::

    python -m kotae.reader_training.snapshots runs/reader-rest --frame reader-e5-small-ja-en \\
        --last 4 --out runs/reader-rest-avg4

Averaging is a plain mean over arrays (:func:`average_tensors`); fairseq's
``average_checkpoints.py`` does the same for fairseq checkpoints, and neither transformers nor
safetensors ships one for a folder of safetensors, hence these few lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError

__all__ = ["average_tensors", "list_snapshots", "materialise", "save_snapshot", "snapshot_path"]

SNAPSHOT_DIR = "snapshots"
MODEL_FILE = "model.safetensors"
SOURCE_FILE = "snapshots.json"
"""Written into a materialised folder: which run, steps and frame it was made from."""
NOT_CARRIED = frozenset({MODEL_FILE, "kotae-prepared.json", "model_card.md", "README.md"})
"""Frame files a materialised reader does not take over: the weights, and the frame's own
provenance (a prepared alias's marker, its card), which would misdescribe the new folder."""
_NAME = re.compile(r"step-(\d+)\.safetensors")


def snapshot_path(output: Path, step: int) -> Path:
    """Where the snapshot of ``step`` lives in a run folder."""
    return output / SNAPSHOT_DIR / f"step-{step:06d}.safetensors"


def save_snapshot(model: Any, path: Path) -> None:
    """Write the model's trainable parameters (fp32) to ``path``, atomically: a crash mid-write
    leaves the previous snapshots and no partial file."""
    from safetensors.torch import save_file

    tensors = {
        name: parameter.detach().float().cpu().contiguous()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.replace(partial, path)


def list_snapshots(run: Path) -> dict[int, Path]:
    """The run's snapshots by step, in step order."""
    found = {}
    for path in (run / SNAPSHOT_DIR).glob("step-*.safetensors"):
        match = _NAME.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def average_tensors(states: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The element-wise mean of same-named tensors, in each tensor's own dtype (summed in float64).

    >>> average_tensors([{"w": np.array([1.0, 2.0])}, {"w": np.array([3.0, 6.0])}])["w"].tolist()
    [2.0, 4.0]
    """
    if not states:
        raise ValueError("average_tensors: no states to average")
    names = set(states[0])
    for number, state in enumerate(states[1:], start=1):
        if set(state) != names:
            differing = sorted(names.symmetric_difference(state))
            raise ValueError(f"state {number} has other tensors than state 0: {differing[:3]}")
    averaged = {}
    for name in states[0]:
        shapes = {state[name].shape for state in states}
        if len(shapes) > 1:
            raise ValueError(f"tensor {name}: shapes differ between states: {sorted(shapes)}")
        total = np.zeros(states[0][name].shape, dtype=np.float64)
        for state in states:
            total += state[name]
        averaged[name] = (total / len(states)).astype(states[0][name].dtype)
    return averaged


def choose_steps(available: Sequence[int], steps: Sequence[int] | None, last: int | None) -> list[int]:
    """The snapshot steps asked for: the given ``steps`` (each must exist), or the ``last`` N."""
    if steps:
        missing = sorted(set(steps) - set(available))
        if missing:
            raise KotaeError(f"--steps {missing[0]}: no such snapshot (have {list(available) or 'none'})")
        return sorted(set(steps))
    count = last or 1
    if count > len(available):
        raise KotaeError(f"--last {count}: the run has only {len(available)} snapshot(s)")
    return list(available)[-count:]


def materialise(run: Path, steps: Sequence[int], frame: Path, out: Path) -> Path:
    """Write a reader folder to ``out``: ``frame``'s files with the mean of the run's snapshots at
    ``steps`` laid over its weights. Every snapshot tensor must exist in the frame with its shape."""
    from safetensors.numpy import load_file, save_file

    snapshots = list_snapshots(run)
    states = [load_file(str(snapshots[step])) for step in steps]
    averaged = average_tensors(states)
    weights = load_file(str(frame / MODEL_FILE))
    for name, tensor in averaged.items():
        if name not in weights:
            raise KotaeError(f"--frame {frame}: has no tensor {name}; is it the run's architecture?")
        if weights[name].shape != tensor.shape:
            raise KotaeError(
                f"--frame {frame}: tensor {name} is {weights[name].shape}, snapshot {tensor.shape}"
            )
        weights[name] = tensor.astype(weights[name].dtype)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in frame.iterdir():
        if path.is_file() and path.name not in NOT_CARRIED:
            shutil.copy2(path, partial / path.name)
    save_file(weights, str(partial / MODEL_FILE), metadata={"format": "pt"})
    source = {"run": str(run), "steps": list(steps), "frame": str(frame)}
    (partial / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.snapshots",
        description="Make a reader folder from a training run's snapshots: one snapshot (--steps 250) "
        "or the mean of several (--last 4, --steps 4000 4500 5000).",
    )
    parser.add_argument("run", type=Path, help="the run's output_dir (holds snapshots/)")
    parser.add_argument(
        "--frame",
        required=True,
        help="a complete reader folder or alias of the same architecture (the run's base_model, or "
        "its finished output_dir): its config, tokenizer and decoding files are carried over",
    )
    parser.add_argument("--out", type=Path, required=True, help="the reader folder to write (replaced)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--last", type=int, help="average the last N snapshots (default: the last one)")
    which.add_argument("--steps", type=int, nargs="+", help="average the snapshots of these steps")
    args = parser.parse_args(argv)

    from kotae.reader_training.evaluate import resolve_reference

    available = list(list_snapshots(args.run))
    if not available:
        raise SystemExit(f"{args.run}: no snapshots in {args.run / SNAPSHOT_DIR} (train with snapshot_steps)")
    try:
        steps = choose_steps(available, args.steps, args.last)
        out = materialise(args.run, steps, resolve_reference(args.frame), args.out)
    except KotaeError as error:
        raise SystemExit(f"error: {error}") from None
    made = f"step {steps[0]}" if len(steps) == 1 else f"the mean of steps {', '.join(map(str, steps))}"
    print(f"{out}: {made} of {args.run}")


if __name__ == "__main__":
    main()

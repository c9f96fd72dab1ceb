"""How far a training run has come, while it runs or after: its step, checkpoints, snapshots and
the learning curve from ``train_log.jsonl``, as a table to read or paste into a note.

A long CPU run (``configs/train/default-reader-cpu-full.yaml``) spans several sittings; this is
the one command that says where it stands without disturbing it (it only reads files)::

    python -m kotae.reader_training.run_status runs/reader-rest

prints the progress line and one row per dev check: the step, the mean training loss since the
previous row, and EM / F1 for each dev set; ``--plot`` also redraws ``curves.png`` in the run.
The hard part, :func:`curve_rows`, is a pure function over the log's records.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kotae.reader_training.report import TrainLog, plot_curves
from kotae.reader_training.snapshots import list_snapshots

__all__ = ["CurveRow", "curve_rows", "curve_table", "progress_line"]

LOG_FILE = "train_log.jsonl"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class CurveRow:
    """One dev check of a run (or the run's newest logged step, with no dev scores)."""

    step: int
    loss: float | None
    """Mean training loss of the records after the previous row up to this step."""
    dev: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Dev set name -> (EM, F1)."""


def curve_rows(records: Sequence[dict[str, Any]]) -> list[CurveRow]:
    """One row per step with dev scores, in step order, and a last row for training logged after
    the last dev check; each row's loss is the mean of the loss records since the previous row.

    >>> rows = curve_rows([{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0},
    ...                    {"step": 20, "dev": "ja", "exact_match": 60.0, "f1": 75.0},
    ...                    {"step": 30, "loss": 0.5}])
    >>> [(r.step, r.loss, r.dev) for r in rows]
    [(20, 1.5, {'ja': (60.0, 75.0)}), (30, 0.5, {})]
    """
    losses = sorted((int(r["step"]), float(r["loss"])) for r in records if "loss" in r and "dev" not in r)
    dev: dict[int, dict[str, tuple[float, float]]] = {}
    for record in records:
        if "dev" in record:
            scores = (float(record["exact_match"]), float(record["f1"]))
            dev.setdefault(int(record["step"]), {})[str(record["dev"])] = scores
    ends = sorted(dev)
    if losses and (not ends or losses[-1][0] > ends[-1]):
        ends.append(losses[-1][0])
    rows, start = [], 0
    for end in ends:
        window = [loss for step, loss in losses if start < step <= end]
        rows.append(CurveRow(end, sum(window) / len(window) if window else None, dev.get(end, {})))
        start = end
    return rows


def curve_table(rows: Sequence[CurveRow]) -> str:
    """The rows as a Markdown table, one EM / F1 column per dev set (in the order first seen)."""
    names = list(dict.fromkeys(name for row in rows for name in row.dev))
    header = ["step", "train loss", *(f"{name} EM / F1" for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        loss = f"{row.loss:.3f}" if row.loss is not None else ""
        cells = [
            f"{row.dev[name][0]:.2f} / {row.dev[name][1]:.2f}" if name in row.dev else "" for name in names
        ]
        lines.append("| " + " | ".join([str(row.step), loss, *cells]) + " |")
    return "\n".join(lines)


def progress_line(run: Path) -> str:
    """The run's newest checkpoint with its step out of the total, and its snapshots' steps."""
    checkpoints = sorted(
        (int(match.group(1)), path)
        for path in run.glob("checkpoint-*")
        if (match := _CHECKPOINT.fullmatch(path.name)) and (path / "trainer_state.json").is_file()
    )
    snapshots = list(list_snapshots(run))
    kept = f"snapshots at steps {', '.join(map(str, snapshots))}" if snapshots else "no snapshots"
    if not checkpoints:
        finished = "finished" if (run / "metrics.json").is_file() else "no checkpoint yet"
        return f"{run}: {finished}; {kept}"
    step, newest = checkpoints[-1]
    state = json.loads((newest / "trainer_state.json").read_text(encoding="utf-8"))
    total = int(state.get("max_steps") or 0)
    share = f" ({100 * step / total:.1f} %)" if total else ""
    return f"{run}: newest checkpoint {newest.name}, step {step:,} of {total:,}{share}; {kept}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.run_status",
        description="Where a training run stands (newest checkpoint, step, snapshots) and its "
        "learning curve from train_log.jsonl as a Markdown table. Only reads the run's files, "
        "so it is safe while the run is training.",
    )
    parser.add_argument("run", type=Path, help="the run's output_dir")
    parser.add_argument("--plot", action="store_true", help="also redraw curves.png in the run folder")
    args = parser.parse_args(argv)

    log = args.run / LOG_FILE
    if not log.is_file():
        raise SystemExit(f"{args.run}: no {LOG_FILE} (is it a kotae training run's output_dir?)")
    records = TrainLog(log).records()
    print(progress_line(args.run))
    print(curve_table(curve_rows(records)))
    if args.plot:
        plot_curves(records, args.run / "curves.png")
        print(f"curves: {args.run / 'curves.png'}")


if __name__ == "__main__":
    main()

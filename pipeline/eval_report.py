"""What ``kotae eval`` writes: ``report.json``, ``report.md``, ``predictions.jsonl`` and the plots.

``report.json`` holds the summary (the ``--json`` object), the settings, the hardware, the recall@k
curve and the breakdowns by language and question type; ``report.md`` shows the same for people,
with the plots (matplotlib, Agg backend): ``recall_at_k.png``, ``latency.png`` and, when the data
has ``question_type`` (JaQuAD does), ``f1_by_question_type.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kotae.pipeline.evaluation import EvalQuestion, QuestionResult

RECALL_PLOT = "recall_at_k.png"
LATENCY_PLOT = "latency.png"
TYPE_PLOT = "f1_by_question_type.png"

_PERCENT_KEYS = ("reader_exact_match", "reader_f1", "exact_match", "f1")


def rounded(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with sensible precision: fractions to 4 places, percentages to 2, ms to 1."""
    result: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, float):
            result[key] = value
        elif key.startswith("recall@") or key == "mrr":
            result[key] = round(value, 4)
        elif key.endswith("_ms"):
            result[key] = round(value, 1)
        else:
            result[key] = round(value, 2)
    return result


def _label(title: str) -> str:
    """Plot titles stay ASCII-safe: matplotlib's default font has no Japanese glyphs."""
    return title.encode("ascii", "replace").decode("ascii")


def plot_recall(curve: dict[str, list[float]], title: str, path: Path) -> None:
    """recall@k for k = 1..depth: own-context hits (solid) and any-context hits (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    ks = list(range(1, len(curve["own"]) + 1))
    axis.plot(ks, curve["own"], marker="o", markersize=3, label="hit in own context")
    axis.plot(ks, curve["any"], linestyle="--", color="tab:gray", label="answer string in any passage")
    for k in (1, 5, 20):
        if k <= len(ks):
            axis.annotate(f"{curve['own'][k - 1]:.2f}", (k, curve["own"][k - 1]), textcoords="offset points",
                          xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
    axis.set_xlabel("k (passages retrieved)")
    axis.set_ylabel("recall@k")
    axis.set_ylim(0, 1.02)
    axis.set_xlim(0.5, len(ks) + 0.5)
    axis.set_xticks([k for k in (1, *range(5, len(ks) + 1, 5)) if k <= len(ks)])
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title(_label(title))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_latency(latencies_ms: Sequence[float], p50: float, p95: float, title: str, path: Path) -> None:
    """Histogram of per-question latency with the p50 and p95 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 5)), color="tab:blue", alpha=0.8)
    axis.axvline(p50, color="tab:green", linestyle="--", label=f"p50 {p50:.0f} ms")
    axis.axvline(p95, color="tab:red", linestyle="--", label=f"p95 {p95:.0f} ms")
    axis.set_xlabel("latency per question (ms), retrieval + reader")
    axis.set_ylabel("questions")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend()
    axis.set_title(_label(title))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_by_type(table: dict[str, dict[str, float | int]], title: str, path: Path) -> None:
    """End-to-end F1 and reader-alone F1 per question type (horizontal bars, n in the labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    labels = [_label(f"{name} (n={table[name]['n']})") for name in names]
    height = 0.38
    figure, axis = plt.subplots(figsize=(8, 1.5 + 0.55 * len(names)))
    rows = range(len(names))
    axis.barh([r - height / 2 for r in rows], [table[n]["f1"] for n in names], height, label="end-to-end F1")
    axis.barh([r + height / 2 for r in rows], [table[n]["reader_f1"] for n in names], height,
              label="reader F1 (gold context)", color="tab:orange")  # fmt: skip
    axis.set_yticks(list(rows), labels)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("F1 (%)")
    # below the axes: inside them, the legend covers the longest bars
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(names)), ncol=2, fontsize=8)
    axis.set_title(_label(title))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _table(rows: dict[str, dict[str, float | int]], first: str) -> list[str]:
    lines = [
        f"| {first} | n | recall@5 | MRR | reader EM | reader F1 | EM | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['n']} | {row['recall@5']:.3f} | {row['mrr']:.3f} | "
            f"{row['reader_exact_match']:.1f} | {row['reader_f1']:.1f} | {row['exact_match']:.1f} | {row['f1']:.1f} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: the command, the numbers, how they were measured, the plots and breakdowns."""
    s = rounded(report["summary"])
    settings, hardware, index = report["settings"], report["hardware"], report["index"]
    lines = [
        f"# kotae eval: {report['config_name']} on {report['data_name']}",
        "",
        f"`{report['command']}`",
        "",
        f"{s['n']} questions with no context given; index of {index['passages']['total']} passages from "
        f"{index['documents']} contexts ({report['created']}).",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    for key in ("recall@1", "recall@5", "recall@20", "recall@5_any", "mrr"):
        if key in s:
            lines.append(f"| {key} | {s[key]:.3f} |")
    for key, name in zip(
        _PERCENT_KEYS, ("reader EM (gold context)", "reader F1 (gold context)", "EM", "F1"), strict=True
    ):
        lines.append(f"| {name} | {s[key]:.2f} |")
    lines += [
        f"| latency p50 | {s['latency_p50_ms']:.0f} ms |",
        f"| latency p95 | {s['latency_p95_ms']:.0f} ms |",
        f"| questions/s | {s['questions_per_second']:.2f} |",
        "",
        f"**Hardware:** {hardware['text']}.",
        "",
        "## How this was measured",
        "",
        f"- Pipeline: `{settings['retriever_type']}` retrieval, {settings['retriever_top_k']} passages to the "
        f"`{settings['reader_type']}` reader `{settings['reader_model']}` (runtime "
        f"`{settings.get('reader_runtime', 'torch')}`); EM/F1 score the top answer "
        "(percent; character-level for Japanese questions, SQuAD words for English, chosen per question).",
        f"- Retrieval: the same retriever components, asked for {settings['retrieval_depth']} passages "
        "(at least 20, so recall@20 and MRR can be measured even when the pipeline reads fewer). A hit is a "
        "passage from the question's own context that contains a gold answer string; `recall@5_any` counts "
        "any passage containing one. Recall and MRR are fractions (0-1)."
        + (
            " With hybrid retrieval each list is fused at that depth, so the fused top passages can differ "
            "slightly from those the pipeline's reader read."
            if settings["retriever_type"] == "hybrid"
            else ""
        ),
        "- Reader EM/F1: the reader alone on each question's gold context (`kotae evaluate`'s code).",
        "- Latency: one question at a time through the whole pipeline (retrieval + reader), after one "
        "warm-up question; questions/s = questions / total pipeline time.",
        "",
        f"![recall@k]({RECALL_PLOT})",
        "",
        f"![latency]({LATENCY_PLOT})",
    ]
    if report["by_question_type"]:
        lines += ["", "## By question type", "", *_table(report["by_question_type"], "question type")]
        lines += ["", f"![F1 by question type]({TYPE_PLOT})"]
    if report["by_language"]:
        lines += ["", "## By language", "", *_table(report["by_language"], "language")]
    lines.append("")
    return "\n".join(lines)


def write_report(
    out: Path,
    report: dict[str, Any],
    results: Sequence[QuestionResult],
    questions: Sequence[EvalQuestion],
    retrieved: Sequence[Sequence[str | None]],
) -> list[Path]:
    """Write everything to ``out`` (created); return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    title = f"{report['config_name']} on {report['data_name']} (n={len(results)})"

    path = out / "report.json"
    payload = {**report, "summary": rounded(report["summary"])}
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    written.append(path)

    path = out / "predictions.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for result, question, ids in zip(results, questions, retrieved, strict=True):
            record = asdict(result)
            record.update(
                question=question.question,
                answers=list(question.answers),
                document_id=question.document_id,
                retrieved=list(ids[:5]),
                latency_ms=round(1000 * result.latency_s, 1),
            )
            record.pop("latency_s")
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    written.append(path)

    path = out / RECALL_PLOT
    plot_recall(report["recall_curve"], f"recall@k: {title}", path)
    written.append(path)
    summary = report["summary"]
    path = out / LATENCY_PLOT
    plot_latency(
        [1000 * r.latency_s for r in results],
        summary["latency_p50_ms"],
        summary["latency_p95_ms"],
        f"latency: {title}",
        path,
    )
    written.append(path)
    if report["by_question_type"]:
        path = out / TYPE_PLOT
        plot_by_type(report["by_question_type"], f"F1 by question type\n{title}", path)
        written.append(path)

    path = out / "report.md"
    path.write_text(markdown(report), encoding="utf-8")
    written.append(path)
    return written

"""Choose how answers from different passages are ranked: reader score vs retriever evidence.

Runs retrieval + kotae's reader ONCE per question (cached in ``runs/rank_interpolation/*.npz``), keeps
every passage's candidate spans with their reader scores, then sweeps the ranking of
:mod:`kotae.pipeline.ranking` offline, ``(1 - w) * reader + w * retriever evidence``, for
``w`` in a grid, evidence ``rank`` / ``score`` and reader score ``margin`` / ``raw`` / ``factored``
(a softmax over passages, :func:`factored_scores`). It prints
end-to-end EM/F1 of the top answer and its share of the reader's F1 on the gold contexts, per data set,
on a choosing split and a reporting split (disjoint question ranges), and the setting that is best on
the choosing split (mean share over the data sets).

The end-to-end figure at ``w = 0``, margin, is what ``kotae eval`` reports for the config's ranking
before this change: same retrievers, same passages, same decoder, same order of ties.

Usage (a busy 2-core machine: about 2-4 s a question; the cache makes reruns instant)::

    .venv/bin/python bench/rank_interpolation.py --config default \\
        --data ../shared/data/jaquad/dev --data ../shared/data/squad-dev \\
        --report 0:300 --choose 300:500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kotae.pipeline.ranking import EVIDENCE, combined_scores, rank_order, retriever_evidence

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
READER_SCORES = ("margin", "raw", "factored")
PASSAGES_READ = (1, 2, 3, 5, 7, 10)


@dataclass
class Cache:
    """Every question's passages and candidate spans, flat with offsets (question q owns
    ``spans[span_offsets[q]:span_offsets[q+1]]`` and ``passages[passage_offsets[q]:...]``)."""

    ids: np.ndarray  # (Q,) str
    gold_f1: np.ndarray  # (Q,) reader alone on the gold context, percent
    span_offsets: np.ndarray  # (Q+1,)
    span_passage: np.ndarray  # (S,) index of the span's passage in its question's retrieval order
    span_margin: np.ndarray  # (S,)
    span_raw: np.ndarray  # (S,)
    span_em: np.ndarray  # (S,) percent
    span_f1: np.ndarray  # (S,) percent
    passage_offsets: np.ndarray  # (Q+1,)
    passage_score: np.ndarray  # (P,) Document.score (NaN for none)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez_compressed(partial, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Cache:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def subset(self, start: int, stop: int) -> Cache:
        s0, s1 = self.span_offsets[start], self.span_offsets[stop]
        p0, p1 = self.passage_offsets[start], self.passage_offsets[stop]
        return Cache(
            self.ids[start:stop],
            self.gold_f1[start:stop],
            self.span_offsets[start : stop + 1] - s0,
            self.span_passage[s0:s1],
            self.span_margin[s0:s1],
            self.span_raw[s0:s1],
            self.span_em[s0:s1],
            self.span_f1[s0:s1],
            self.passage_offsets[start : stop + 1] - p0,
            self.passage_score[p0:p1],
        )

    def first_passages(self, k: int) -> Cache:
        """The cache as if only each question's first ``k`` retrieved passages had been read: their
        spans and scores (a passage's spans do not depend on the other passages read with it)."""
        kept = self.span_passage < k
        passage_rank = np.arange(len(self.passage_score)) - np.repeat(
            self.passage_offsets[:-1], np.diff(self.passage_offsets)
        )
        first = passage_rank < k
        return replace(
            self,
            span_offsets=np.concatenate([[0], np.cumsum(kept)])[self.span_offsets],
            span_passage=self.span_passage[kept],
            span_margin=self.span_margin[kept],
            span_raw=self.span_raw[kept],
            span_em=self.span_em[kept],
            span_f1=self.span_f1[kept],
            passage_offsets=np.concatenate([[0], np.cumsum(first)])[self.passage_offsets],
            passage_score=self.passage_score[first],
        )

    def extend(self, more: Cache) -> Cache:
        """This cache followed by ``more`` (later questions)."""
        return Cache(
            np.concatenate([self.ids, more.ids]),
            np.concatenate([self.gold_f1, more.gold_f1]),
            np.concatenate([self.span_offsets, more.span_offsets[1:] + self.span_offsets[-1]]),
            np.concatenate([self.span_passage, more.span_passage]),
            np.concatenate([self.span_margin, more.span_margin]),
            np.concatenate([self.span_raw, more.span_raw]),
            np.concatenate([self.span_em, more.span_em]),
            np.concatenate([self.span_f1, more.span_f1]),
            np.concatenate([self.passage_offsets, more.passage_offsets[1:] + self.passage_offsets[-1]]),
            np.concatenate([self.passage_score, more.passage_score]),
        )


def build_cache(config_path: str, data: str, count: int, path: Path, chunk: int = 25) -> Cache:
    """Retrieve and read the first ``count`` questions of ``data`` with ``config_path``'s pipeline,
    saving to ``path`` every ``chunk`` questions and resuming from what ``path`` already holds."""
    from kotae.indexing.job import run_index
    from kotae.pipeline.config import load_pipeline_config
    from kotae.pipeline.eval_job import default_index_dir, load_questions, squad_files
    from kotae.pipeline.qa import QuestionAnswerer

    config = load_pipeline_config(config_path)
    files = squad_files(data)
    questions = load_questions(files, count)
    directory = default_index_dir(config, files)
    config = load_pipeline_config(config_path, [f"index.dir={json.dumps(str(directory))}"])
    print(f"indexing {data} into {directory} (incremental)", file=sys.stderr, flush=True)
    run_index(config, files, progress=False)
    answerer = QuestionAnswerer.from_config(config, config_path)
    components = {name: answerer.pipeline.get_component(name) for name in answerer.components}
    cache = Cache.load(path) if path.is_file() else None
    started = time.perf_counter()
    for first in range(0 if cache is None else len(cache.ids), len(questions), chunk):
        part = read_questions(config, components, questions[first : first + chunk])
        cache = part if cache is None else cache.extend(part)
        cache.save(path)
        print(
            f"  {data}: {len(cache.ids)}/{len(questions)} ({time.perf_counter() - started:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    assert cache is not None
    return cache


def read_questions(config: Any, components: dict[str, Any], questions: list[Any]) -> Cache:
    """Each question's passages (the pipeline's retrievers) and every candidate span of the reader,
    scored against the gold answers; and the reader alone on each gold context."""
    from kotae.pipeline.eval_job import read_gold_contexts, retrieve_deep
    from kotae.pipeline.evaluation import score_answer

    reader = components["reader"]
    reader.warm_up()
    spans: dict[str, list[float]] = {k: [] for k in ("passage", "margin", "raw", "em", "f1")}
    span_offsets, passage_offsets, passage_score = [0], [0], []
    for question in questions:
        passages = [
            d for d in retrieve_deep(components, question.question, config.retriever.top_k) if d.content
        ]
        every = reader.settings.n_best * max(1, len(passages))
        decoded = reader.read(question.question, passages, top_k=every) if passages else None
        for span in decoded.answers if decoded else []:
            em, f1 = score_answer(span.text, question)
            spans["passage"].append(span.context_index)
            spans["margin"].append(span.score if reader.relative_scores else np.nan)
            spans["raw"].append(span.start_logit + span.end_logit)
            spans["em"].append(em)
            spans["f1"].append(f1)
        span_offsets.append(len(spans["f1"]))
        passage_score.extend(np.nan if d.score is None else d.score for d in passages)
        passage_offsets.append(len(passage_score))
    gold, _ = read_gold_contexts(config, reader, questions)
    return Cache(
        ids=np.array([q.id for q in questions]),
        gold_f1=np.array([score_answer(gold.get(q.id, ""), q)[1] for q in questions]),
        span_offsets=np.array(span_offsets, dtype=np.int64),
        span_passage=np.array(spans["passage"], dtype=np.int64),
        span_margin=np.array(spans["margin"], dtype=np.float64),
        span_raw=np.array(spans["raw"], dtype=np.float64),
        span_em=np.array(spans["em"], dtype=np.float64),
        span_f1=np.array(spans["f1"], dtype=np.float64),
        passage_offsets=np.array(passage_offsets, dtype=np.int64),
        passage_score=np.array(passage_score, dtype=np.float64),
    )


def end_to_end(cache: Cache, reader_score: str, evidence: str, weight: float) -> tuple[float, float]:
    """Mean EM and F1 (percent) of each question's top answer under one ranking setting."""
    ems, f1s = [], []
    scores = cache.span_margin if reader_score in ("margin", "factored") else cache.span_raw
    for q in range(len(cache.ids)):
        s0, s1 = cache.span_offsets[q], cache.span_offsets[q + 1]
        if s0 == s1:
            ems.append(0.0)
            f1s.append(0.0)
            continue
        p0, p1 = cache.passage_offsets[q], cache.passage_offsets[q + 1]
        raw_scores = cache.passage_score[p0:p1]
        prior = retriever_evidence([None if np.isnan(s) else float(s) for s in raw_scores], evidence)  # type: ignore[arg-type]
        if reader_score == "factored":
            combined = factored_scores(
                scores[s0:s1], cache.span_raw[s0:s1], cache.span_passage[s0:s1], prior, weight
            )
        else:
            combined = combined_scores(scores[s0:s1], cache.span_passage[s0:s1], prior, weight)
        top = s0 + int(rank_order(combined)[0])
        ems.append(float(cache.span_em[top]))
        f1s.append(float(cache.span_f1[top]))
    return float(np.mean(ems)), float(np.mean(f1s))


def factored_scores(
    margin: np.ndarray, raw: np.ndarray, passage: np.ndarray, prior: np.ndarray, weight: float
) -> np.ndarray:
    """A softmax over passages: ``log P(span | passage) + log P(passage)``, where ``P(span | passage)``
    is a softmax of raw scores over the passage's candidate spans and ``P(passage)`` a softmax over
    passages of ``(1 - w) * best margin + w * retriever evidence`` (the normaliser of ``log P(passage)``
    is the same for every span of a question, so it is left out)."""
    within = np.empty_like(raw)
    best = np.full(len(prior), -np.inf)
    for p in np.unique(passage):
        mask = passage == p
        within[mask] = raw[mask] - np.logaddexp.reduce(raw[mask])
        best[p] = margin[mask].max()
    return within + combined_scores(best[passage], passage, prior, weight)


def parse_range(text: str) -> tuple[int, int]:
    start, _, stop = text.partition(":")
    return int(start), int(stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--report", default="0:300", help="questions reported on (start:stop)")
    parser.add_argument("--choose", default="300:500", help="questions the setting is chosen on")
    parser.add_argument("--cache-dir", default="runs/rank_interpolation")
    parser.add_argument("--no-read", action="store_true", help="sweep what is cached, read nothing")
    args = parser.parse_args()
    report, choose = parse_range(args.report), parse_range(args.choose)
    count = max(report[1], choose[1])
    caches: dict[str, Cache] = {}
    for data in args.data:
        name = f"{Path(data).parent.name}-dev" if Path(data).name == "dev" else Path(data).name
        path = Path(args.cache_dir) / f"{name}-{Path(args.config).stem}.npz"
        held = len(Cache.load(path).ids) if path.is_file() else 0
        if held < count and not args.no_read:
            print(f"reading {count} questions of {data} (cache {path}, {held} there)", file=sys.stderr)
            build_cache(args.config, data, count, path)
        caches[name] = Cache.load(path)
    held = min(len(c.ids) for c in caches.values())
    if held < count:  # --no-read with a partial cache: the choosing split ends where the cache does
        choose = (choose[0], min(choose[1], held))
        print(f"only {held} questions cached: choosing on {choose[0]}-{choose[1]}", file=sys.stderr)

    settings = [(r, e, w) for r in READER_SCORES for e in EVIDENCE for w in WEIGHTS if e == "rank" or w > 0]
    table: dict[tuple[str, str, float], dict[str, dict[str, tuple[float, float, float]]]] = {}
    for setting in settings:
        row: dict[str, dict[str, tuple[float, float, float]]] = {}
        for name, cache in caches.items():
            row[name] = {}
            for split, (start, stop) in (("choose", choose), ("report", report)):
                part = cache.subset(start, stop)
                em, f1 = end_to_end(part, *setting)
                gold = float(np.mean(part.gold_f1))
                row[name][split] = (em, f1, 100.0 * f1 / gold if gold else 0.0)
        table[setting] = row

    names = list(caches)
    for name in names:
        for split, (start, stop) in (("choose", choose), ("report", report)):
            gold = float(np.mean(caches[name].subset(start, stop).gold_f1))
            print(f"{name} questions {start}-{stop} ({split}): reader F1 on gold contexts {gold:.1f}")
    header = "reader  evidence weight | " + " | ".join(
        f"{n} choose EM/F1/share   {n} report EM/F1/share" for n in names
    )
    print(header)
    for (reader_score, evidence, weight), row in table.items():
        cells = " | ".join(
            "  ".join(f"{em:5.1f} {f1:5.1f} {share:5.1f}%" for em, f1, share in row[n].values())
            for n in names
        )
        print(f"{reader_score:6s}  {evidence:8s} {weight:5.2f}  | {cells}")
    best = max(table, key=lambda s: (np.mean([table[s][n]["choose"][2] for n in names]), -s[2]))
    today = ("margin", "rank", 0.0)
    print(
        f"\nchosen on the choosing split (best mean share): reader={best[0]} evidence={best[1]} weight={best[2]}"
    )
    for name in names:
        before, after = table[today][name]["report"], table[best][name]["report"]
        print(
            f"{name} report split: F1 {before[1]:.1f} -> {after[1]:.1f}, "
            f"share of gold-context F1 {before[2]:.1f}% -> {after[2]:.1f}%"
        )
    print("\nless reading: only the first k retrieved passages read, the chosen ranking, report split")
    for name in names:
        part = caches[name].subset(*report)
        gold = float(np.mean(part.gold_f1))
        cells = []
        for k in PASSAGES_READ:
            em, f1 = end_to_end(part.first_passages(k), *best)
            cells.append(f"k={k}: {em:.1f}/{f1:.1f} ({100.0 * f1 / gold if gold else 0.0:.1f}%)")
        print(f"{name} EM/F1 (share): " + "  ".join(cells))


if __name__ == "__main__":
    main()

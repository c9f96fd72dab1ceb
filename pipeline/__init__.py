"""kotae's QA pipeline: retrievers and a reader as a Haystack pipeline, built from ``configs/pipeline/*.yaml``.

For: asking questions of an index (``kotae ask``, ``kotae serve``, ``kotae eval``, feedback). It
sits above :mod:`kotae.indexing` and :mod:`kotae.reader_training` and uses both; only the console
script (:mod:`kotae.cli`) sits above it.

- ``config.py``: the validated pipeline YAML and ``--set a.b=c`` overrides.
- ``build.py``: config → Haystack ``Pipeline``; loading pipeline YAML back under kotae's allow-list.
- ``reader.py``: ``KotaeExtractiveReader``, the reader component (reader_training's windowing and decoder);
  ``text_embedder.py``: ``KotaeTextEmbedder``, the question embedder (a model alias, resolved on load).
  Both are also importable from ``haystack_integrations.components.{readers,embedders}.kotae``.
- ``answers.py``: source-document offsets, the sentence around an answer, the JSON answer record.
- ``qa.py``: ``QuestionAnswerer``, a warmed-up pipeline behind a lock (used by ask, serve and the bench).
- ``cli.py``: ``kotae ask``, ``kotae serve``, ``kotae pipeline show``; ``index_cli.py``: ``kotae index``
  (a pipeline YAML's embedder and index sections handed to :func:`kotae.indexing.run_index`).
- ``server.py``: the FastAPI app; ``schemas.py``: its request and response bodies; ``guards.py``:
  API key, CORS, slow clients; ``web.py``: the question page.
- ``feedback.py``: users' verdicts on answers (append-only SQLite next to the index) and their SQuAD
  v2.0 export; ``feedback_api.py``: ``POST /feedback``; ``feedback_cli.py``: ``kotae feedback list|export``.
- ``testing.py``: a tiny indexed corpus with tiny models, for tests.
- ``evaluation.py``: open-domain evaluation's pure core (hit rules, recall@k, MRR, latency percentiles);
  ``eval_job.py``: the ``kotae eval`` job (index a SQuAD set, ask with no context, score),
  ``eval_cli.py`` its command; ``eval_report.py``:
  its report.md/report.json and plots.

Public names (imported on first use)::

    from kotae.pipeline import load_pipeline_config, QuestionAnswerer
    answers = QuestionAnswerer.from_config(load_pipeline_config("default")).ask("富士山の高さは？")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kotae.lazy import lazy_exports

if TYPE_CHECKING:
    from kotae.pipeline.answers import answer_record
    from kotae.pipeline.build import build_pipeline, load_pipeline_yaml
    from kotae.pipeline.config import PipelineConfig, load_pipeline_config
    from kotae.pipeline.qa import QuestionAnswerer
    from kotae.pipeline.reader import KotaeExtractiveReader
    from kotae.pipeline.server import create_app

_EXPORTS = {
    "KotaeExtractiveReader": "kotae.pipeline.reader",
    "PipelineConfig": "kotae.pipeline.config",
    "QuestionAnswerer": "kotae.pipeline.qa",
    "answer_record": "kotae.pipeline.answers",
    "build_pipeline": "kotae.pipeline.build",
    "create_app": "kotae.pipeline.server",
    "load_pipeline_config": "kotae.pipeline.config",
    "load_pipeline_yaml": "kotae.pipeline.build",
}
__all__ = [
    "KotaeExtractiveReader",
    "PipelineConfig",
    "QuestionAnswerer",
    "answer_record",
    "build_pipeline",
    "create_app",
    "load_pipeline_config",
    "load_pipeline_yaml",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

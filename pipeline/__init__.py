"""kotae's QA pipeline: retrievers and a reader as a Haystack pipeline, built from ``configs/pipeline/*.yaml``.

- ``config.py``: the validated pipeline YAML and ``--set a.b=c`` overrides.
- ``build.py``: config → Haystack ``Pipeline``; loading pipeline YAML back under kotae's allow-list.
- ``reader.py``: ``KotaeExtractiveReader``, the reader component (reader_training's windowing and decoder).
- ``answers.py``: source-document offsets, the sentence around an answer, the JSON answer record.
- ``qa.py``: ``QuestionAnswerer``, a warmed-up pipeline behind a lock (used by ask, serve and the bench).
- ``cli.py``: ``kotae ask``, ``kotae serve``, ``kotae pipeline show``; ``server.py``: the FastAPI app.
- ``feedback.py``: users' verdicts on answers (append-only SQLite next to the index) and their SQuAD
  v2.0 export; ``feedback_api.py``: ``POST /feedback``; ``feedback_cli.py``: ``kotae feedback list|export``.
- ``testing.py``: a tiny indexed corpus with tiny models, for tests.
- ``evaluation.py``: open-domain evaluation's pure core (hit rules, recall@k, MRR, latency percentiles);
  ``eval_cli.py``: ``kotae eval`` (index a SQuAD set, ask with no context, score); ``eval_report.py``:
  its report.md/report.json and plots.
"""

"""No silent mismatch (issue 22): the CLI refuses what would give meaningless results, in one line.

- asking with another embedder than the index was built with names both and stops;
- an empty corpus is an error unless ``--allow-empty``;
- a binary file with a text extension is skipped and counted, not "repaired" and indexed;
- ``KOTAE_HOME`` moves the default index as well as the models;
- ``kotae --version`` prints the version.

Everything runs the real CLI over a real index built with tiny models.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from kotae.cli import app
from kotae.errors import KotaeError
from kotae.indexing.testing import build_tiny_model
from kotae.pipeline.testing import TinySetup, build_tiny_setup

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"

# The first bytes of a real x86-64 ELF executable, then code-like bytes: mostly valid UTF-8.
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00>\x00\x01\x00\x00\x00" + b"main\x00puts\x00" * 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _overrides(setup: TinySetup, embedder: Path | None = None) -> list[str]:
    args: list[str] = []
    for override in setup.overrides:
        if embedder is not None and override.startswith("embedder.model="):
            override = f"embedder.model={json.dumps(str(embedder))}"
        args += ["--set", override]
    return args


def test_ask_with_another_embedder_is_refused_naming_both(setup: TinySetup, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    args = ["ask", "富士山の高さは？", "--config", str(CONFIGS / "default.yaml")]
    refused = CliRunner().invoke(app, [*args, *_overrides(setup, other)])
    error = refused.exception
    assert isinstance(error, KotaeError), refused.output
    message = str(error)
    assert "\n" not in message
    assert str(setup.embedder.resolve()) in message and str(other) in message
    assert "--full" in message
    same = CliRunner().invoke(app, [*args, "--json", *_overrides(setup)])
    assert same.exit_code == 0, same.output
    copy = tmp_path / "copy"  # the same model in another folder is the same embedder
    shutil.copytree(setup.embedder, copy)
    copied = CliRunner().invoke(app, [*args, "--json", *_overrides(setup, copy)])
    assert copied.exit_code == 0, copied.output
    # BM25 alone never uses the embedder: nothing to refuse.
    bm25 = ["ask", "富士山の高さは？", "--config", str(CONFIGS / "bm25.yaml"), *_overrides(setup, other)]
    assert CliRunner().invoke(app, bm25).exit_code == 0


def test_serve_with_another_embedder_is_refused(setup: TinySetup, tmp_path: Path) -> None:
    from kotae.pipeline.server import create_app

    other = build_tiny_model(tmp_path / "other", seed=1)
    config = setup.config(CONFIGS / "dense.yaml", [f"embedder.model={json.dumps(str(other))}"])
    with pytest.raises(KotaeError, match="was built with embedder"):
        create_app(config)


def _index(tmp_path: Path, corpus: Path, *extra: str) -> Result:
    model = build_tiny_model(tmp_path / "embedder")
    args = ["index", "--corpus", str(corpus), "--json", "--set", f"embedder.model={model}", *extra]
    return CliRunner().invoke(app, args)


def test_empty_corpus_is_an_error_unless_allowed(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "image.png").write_bytes(b"\x89PNG")
    index = tmp_path / "index"
    result = _index(tmp_path, corpus, "--index-dir", str(index))
    error = result.exception
    assert isinstance(error, KotaeError) and "no documents to index" in str(error)
    assert "--allow-empty" in str(error) and "image.png" in str(error) and "\n" not in str(error)
    assert not index.exists()  # nothing was created
    allowed = _index(tmp_path, corpus, "--index-dir", str(index), "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout.strip().splitlines()[-1])["passages"]["total"] == 0


def test_binary_file_named_txt_is_skipped_and_counted(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("東京は日本の首都です。", encoding="utf-8")
    (corpus / "program.txt").write_bytes(ELF)
    result = _index(tmp_path, corpus, "--index-dir", str(tmp_path / "index"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["added"] == 1 and summary["repaired"] == []
    assert summary["skipped"] == [
        {"source": str((corpus / "program.txt").resolve()), "reason": "binary file (NUL bytes), not text"}
    ]
    model = tmp_path / "embedder" / "model"
    args = ["index", "--corpus", str(corpus), "--index-dir", str(tmp_path / "index"), "--full"]
    text = CliRunner().invoke(app, [*args, "--set", f"embedder.model={model}"])
    assert "warning: 1 skipped:" in text.stdout and "binary file" in text.stdout


def test_kotae_home_moves_the_default_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kotae.pipeline.config import load_pipeline_config

    home = tmp_path / "home"
    monkeypatch.setenv("KOTAE_HOME", str(home))
    for config in (None, "default", "dense", "bm25"):
        assert load_pipeline_config(config).index_dir == home / "index" / "default"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("富士山は日本で一番高い山です。", encoding="utf-8")
    result = _index(tmp_path, corpus)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["index_dir"] == str(home / "index" / "default")
    assert (home / "index" / "default" / "store.sqlite3").is_file()


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"kotae {version('kotae')}"

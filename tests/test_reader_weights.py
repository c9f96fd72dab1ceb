"""Shipping a reader as fp16 weights without its word embeddings, and completing it from the base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kotae.errors import KotaeError
from kotae.reader_training.export import export_delta
from kotae.reader_training.testing import tiny_reader, tiny_tokenizer
from kotae.reader_weights import DELTA_FILE, materialise
from kotae.weight_files import shard

TEXTS = ["Alice met Bob in Paris.", "奈良は古都です。"]


@pytest.fixture()
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny base encoder folder and a 'trained' reader sharing its word embeddings."""
    import torch

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer(TEXTS)
    reader = tiny_reader(tokenizer, seed=1)
    base_folder, model_folder = tmp_path / "base", tmp_path / "reader"
    reader.bert.save_pretrained(base_folder)  # BertModel keys: embeddings.word_embeddings.weight
    tokenizer.save_pretrained(base_folder)
    with torch.no_grad():  # training changed everything but the word embeddings
        for name, parameter in reader.named_parameters():
            if "word_embeddings" not in name:
                parameter.add_(0.01)
    reader.save_pretrained(model_folder)
    tokenizer.save_pretrained(model_folder)
    (model_folder / "reader_config.json").write_text('{"max_length": 64}')
    return base_folder, model_folder


def test_round_trip_gives_the_same_answers(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    base_folder, model_folder = trained
    delta = export_delta(model_folder, tmp_path / "delta", base=str(base_folder))
    assert not any("word_embeddings" in t for t in _shipped_tensor_names(delta))
    assert json.loads((delta / DELTA_FILE).read_text())["dtype"] == "float16"

    target = tmp_path / "complete"
    materialise(delta, base_folder, target)
    assert (target / "reader_config.json").read_text() == '{"max_length": 64}'
    tokenizer = AutoTokenizer.from_pretrained(target)
    inputs = tokenizer("Alice", "Alice met Bob in Paris.", return_tensors="pt")
    original = AutoModelForQuestionAnswering.from_pretrained(model_folder).eval()
    rebuilt = AutoModelForQuestionAnswering.from_pretrained(target, use_safetensors=True).eval()
    with torch.no_grad():
        expected, got = original(**inputs), rebuilt(**inputs)
    assert torch.allclose(expected.start_logits, got.start_logits, atol=1e-2)
    assert torch.allclose(expected.end_logits, got.end_logits, atol=1e-2)


def test_changed_word_embeddings_are_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForQuestionAnswering

    base_folder, model_folder = trained
    model = AutoModelForQuestionAnswering.from_pretrained(model_folder)
    model.get_input_embeddings().weight.data[0, 0] += 1.0
    model.save_pretrained(model_folder)
    with pytest.raises(KotaeError, match="word embeddings differ"):
        export_delta(model_folder, tmp_path / "delta", base=str(base_folder))


def test_a_damaged_shard_is_named(trained: tuple[Path, Path], tmp_path: Path) -> None:
    base_folder, model_folder = trained
    delta = export_delta(model_folder, tmp_path / "delta", base=str(base_folder))
    first = delta / "weights-1.safetensors"
    first.write_bytes(first.read_bytes()[:-10])
    with pytest.raises(KotaeError, match=r"weights-1\.safetensors is missing or damaged"):
        materialise(delta, base_folder, tmp_path / "complete")


def test_shards_respect_the_limit_and_keep_order() -> None:
    tensors = {f"t{i}": np.zeros(100, dtype=np.float16) for i in range(5)}  # 200 bytes each
    groups = shard(tensors, limit=450)
    assert [list(g) for g in groups] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert shard({"big": np.zeros(1000, dtype=np.float16)}, limit=10)[0].keys() == {"big"}


def _shipped_tensor_names(delta: Path) -> list[str]:
    from safetensors import safe_open

    names: list[str] = []
    for file in sorted(delta.glob("weights-*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            names.extend(handle.keys())
    return names


def test_a_prepared_alias_is_rebuilt_when_its_shipped_version_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kotae import models

    monkeypatch.setenv("KOTAE_HOME", str(tmp_path / "home"))
    shipped = tmp_path / "shipped.txt"
    shipped.write_text("v1")

    def fill(folder: Path) -> str:
        (folder / "content.txt").write_text(shipped.read_text())
        return "test"

    alias = models.Alias("shipped-test", "a test alias", fill, version=shipped.read_text)
    monkeypatch.setitem(models.ALIASES, alias.name, alias)
    folder, did_work = models.prepare(alias.name)
    assert did_work and (folder / "content.txt").read_text() == "v1"
    assert models.prepare(alias.name) == (folder, False)
    shipped.write_text("v2")  # kotae ships new weights: the old folder is stale
    assert not models.is_prepared(alias.name)
    folder, did_work = models.prepare(alias.name)
    assert did_work and (folder / "content.txt").read_text() == "v2"

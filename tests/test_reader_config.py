"""Training configuration: shipped configs validate; misspelt keys and bad values fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kotae.errors import KotaeError
from kotae.reader_training.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_train_config(path)
    assert config.train_data


def test_jaquad_small_recipe() -> None:
    config = load_train_config(CONFIGS / "jaquad-small.yaml")
    assert config.base_model == "multilingual-e5-small"
    assert config.train_data[0].max_examples == 2000
    assert (config.max_length, config.stride, config.freeze_word_embeddings) == (256, 96, True)


def test_overrides_and_shorthands(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train_data: data/train.json\ndev_data:\n  - {path: data/dev, name: dev}\n")
    config = load_train_config(path, ["max_steps=20", "learning_rate=1e-4", "freeze_word_embeddings=true"])
    assert config.max_steps == 20 and config.learning_rate == 1e-4 and config.freeze_word_embeddings
    assert config.train_data[0].path == "data/train.json" and config.train_data[0].weight == 1.0
    assert config.dev_data[0].label == "dev"
    mixed = load_train_config(path, ["train_data=[{path: a, weight: 2}, {path: b, max_examples: 10}]"])
    assert [(s.path, s.weight, s.max_examples) for s in mixed.train_data] == [
        ("a", 2.0, None),
        ("b", 1.0, 10),
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rat=1e-4"], "unknown key 'learning_rat'"),
        (["train_data=[{path: a, wieght: 2}]"], "unknown key 'train_data.0.wieght'"),
        (["batch_size=0"], "batch_size = 0 is not allowed"),
        (["language=fr"], "language = 'fr' is not allowed"),
        (["stride=320"], "stride (320) must be smaller"),
        (["max_steps"], "expected KEY=VALUE"),
        (["dev_data=[{path: a/dev}, {path: b/dev}]"], "name 'dev' is used twice"),
    ],
)
def test_bad_keys_and_values_are_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train_data: data/train.json\n")
    with pytest.raises(KotaeError) as error:
        load_train_config(path, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(KotaeError, match="config file not found"):
        load_train_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(KotaeError, match="required key 'train_data'"):
        load_train_config(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(KotaeError, match="expected a mapping"):
        load_train_config(tmp_path / "list.yaml")

"""Training configuration: shipped configs validate; misspelt keys and bad values fail in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    assert config.train_data[0].path == str(tmp_path / "data/train.json")  # beside the YAML
    assert config.train_data[0].weight == 1.0
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


def test_run_qa_names_are_aliases_in_yaml_and_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_name_or_path: reader-e5-small-ja-en\ntrain_file: ../train.json\nmax_seq_length: 256\n"
        "doc_stride: 64\nn_best_size: 10\nper_device_train_batch_size: 4\nnull_score_diff_threshold: 0.5\n"
    )
    config = load_train_config(path, ["doc_stride=32", "per_device_eval_batch_size=8", "disable_tqdm=true"])
    assert config.base_model == "reader-e5-small-ja-en"
    assert (config.max_length, config.stride, config.n_best, config.batch_size) == (256, 32, 10, 4)
    assert (config.eval_batch_size, config.null_score_threshold, config.progress) == (8, 0.5, False)
    assert config.train_data[0].path == str(tmp_path.parent / "train.json")  # beside the YAML
    path.write_text("train_file: a.json\nstride: 64\ndoc_stride: 32\n")
    with pytest.raises(KotaeError, match="'stride' and 'doc_stride' are the same setting"):
        load_train_config(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer_args={lr_schedular_type: cosine}"], "trainer_args.lr_schedular_type: not a transformers"),
        (["trainer_args={lr_schedular_type: cosine}"], "did you mean 'lr_scheduler_type'?"),
        (["trainer_args={learning_rate: 1e-4}"], "kotae sets this from its own key 'learning_rate'"),
        (["trainer_args={fp16: true}"], "own key 'precision'"),
        (["trainer_args={eval_strategy: steps}"], "trainer_args.eval_strategy: kotae's training loop"),
        (["learning_rat=1e-4"], "did you mean 'learning_rate'?"),
        (["doc_strid=1"], "did you mean 'doc_stride'?"),
        (["train_data=[{path: a, wieght: 2}]"], "did you mean 'weight'?"),
    ],
)
def test_trainer_args_and_misspelt_keys_are_one_line(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train_data: data/train.json\n")
    with pytest.raises(KotaeError) as error:
        load_train_config(path, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_trainer_args_reach_training_arguments(tmp_path: Path) -> None:
    from kotae.reader_training.train import training_arguments

    config = load_train_config(
        None,
        [
            "train_data=a.json",
            "trainer_args={report_to: [], lr_scheduler_type: cosine, optim: adafactor, "
            "gradient_checkpointing: true, dataloader_num_workers: 1}",
        ],
    )
    arguments = training_arguments(config, tmp_path)
    assert arguments.lr_scheduler_type == "cosine" and arguments.optim == "adafactor"
    assert arguments.gradient_checkpointing is True and arguments.dataloader_num_workers == 1
    assert arguments.report_to == [] and arguments.learning_rate == config.learning_rate


def test_hub_dataset_names_take_a_config_and_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from kotae.reader_training.data import HubName, load_examples, parse_hub_name

    assert parse_hub_name("shunk031/JGLUE:JSQuAD@validation") == HubName(
        "shunk031/JGLUE", "JSQuAD", "validation"
    )
    assert parse_hub_name("squad@validation") == HubName("squad", None, "validation")
    assert parse_hub_name("squad") == HubName("squad", None, "train")
    for bad in ("squad:", "squad@", ":x"):
        with pytest.raises(KotaeError, match="NAME\\[:CONFIG\\]\\[@SPLIT\\]"):
            parse_hub_name(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(KotaeError) as error:  # the hub fails offline: one line naming the set
        load_examples("shunk031/JGLUE:JSQuAD@validation")
    assert "shunk031/JGLUE:JSQuAD@validation" in str(error.value) and "\n" not in str(error.value)

    import datasets

    calls: list[tuple[Any, ...]] = []

    def fake_load(*named: str, split: str) -> list[dict[str, Any]]:  # what reaches the datasets library
        calls.append((*named, split))
        context = "JGLUE's JSQuAD is a Japanese reading set."
        return [
            {
                "id": "j1",
                "question": "?",
                "context": context,
                "answers": {"text": ["JSQuAD"], "answer_start": [8]},
            }
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_examples("shunk031/JGLUE:JSQuAD@validation").report.kept == 1
    assert calls == [("shunk031/JGLUE", "JSQuAD", "validation")]


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_data_paths_resolve_from_any_folder(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_train_config(path)
    shared = [s.path for s in [*config.train_data, *config.dev_data] if "shared" in s.path]
    assert shared and all(Path(p).exists() for p in shared), shared


def test_cpu_features_read_the_flags_line_only() -> None:
    from kotae.cpu_features import cpu_flags, int8_dot_product, native_bf16

    intel = cpu_flags("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    sapphire = cpu_flags("flags\t\t: fpu avx2 amx_bf16 amx_int8\n")
    epyc = cpu_flags("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n")
    assert native_bf16(intel) and native_bf16(sapphire) and not native_bf16(epyc)
    assert int8_dot_product(intel) and int8_dot_product(sapphire) and not int8_dot_product(epyc)
    assert cpu_flags("") == frozenset() and not native_bf16(cpu_flags(""))
    assert not native_bf16(cpu_flags("model name\t: avx512_bf16 in a name, not a flag\n"))

"""Model folders are untrusted: weights load only from safetensors, never code from the folder.

Real tiny models (indexing/testing.py, reader_training/testing.py) go through the real loaders:
the indexing job, the query pipeline (dense embedder, kotae and Haystack readers) and ``kotae models
check``. A folder with only a pickled ``pytorch_model.bin`` is refused in one line naming it; a
booby-trapped pickle or ``auto_map`` module beside good weights is never run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from kotae.errors import KotaeError
from kotae.model_files import load_sentence_transformer, require_safetensors
from kotae.pipeline.qa import QuestionAnswerer
from kotae.pipeline.testing import TinySetup, build_tiny_setup

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pipeline"


class _Trap:
    """Unpickling this touches ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("untrusted"))


def _pickle_weights(source: Path, target: Path) -> Path:
    """A copy of model folder ``source`` whose weights are a pickled ``pytorch_model.bin`` only.

    What ``save_pretrained(safe_serialization=False)`` wrote before transformers 5 (which ignores
    the flag): ``torch.save`` of the same state dict.
    """
    from safetensors.torch import load_file

    shutil.copytree(source, target)
    for weights in target.rglob("*.safetensors"):
        torch.save(load_file(weights), weights.with_name("pytorch_model.bin"))
        weights.unlink()
    return target


@pytest.fixture(scope="module")
def pickled(setup: TinySetup) -> dict[str, Path]:
    """The tiny embedder and reader with their weights pickled (only pytorch_model.bin)."""
    embedder = _pickle_weights(setup.embedder, setup.root / "pickled-embedder")
    reader = _pickle_weights(setup.reader, setup.root / "pickled-reader")
    for folder in (embedder, reader):
        assert (folder / "pytorch_model.bin").is_file() and not list(folder.rglob("*.safetensors"))
    return {"embedder": embedder, "reader": reader}


def _one_line_naming(error: pytest.ExceptionInfo[KotaeError], folder: Path) -> None:
    message = str(error.value)
    assert str(folder) in message and "safetensors" in message and "\n" not in message, message


def _set(key: str, value: Path | str) -> str:
    return f"{key}={json.dumps(str(value))}"


def test_the_indexing_job_refuses_a_pickled_embedder(setup: TinySetup, pickled: dict[str, Path]) -> None:
    from kotae.indexing.job import run_index

    config = setup.config(
        extra=[_set("embedder.model", pickled["embedder"]), _set("index.dir", setup.root / "i2")]
    )
    with pytest.raises(KotaeError) as error:
        run_index(config, [setup.corpus])
    _one_line_naming(error, pickled["embedder"])


@pytest.mark.parametrize(
    ("config", "role", "extra"),
    [
        ("default.yaml", "embedder", []),
        ("bm25.yaml", "reader", []),
        ("bm25.yaml", "reader", ["reader.type=haystack"]),
    ],
)
def test_the_pipeline_refuses_a_pickled_model(
    setup: TinySetup, pickled: dict[str, Path], config: str, role: str, extra: list[str]
) -> None:
    model = pickled[role]
    settings = setup.config(CONFIGS / config, [_set(f"{role}.model", model), *extra])
    with pytest.raises(KotaeError) as error:
        QuestionAnswerer.from_config(settings)
    _one_line_naming(error, model)


def test_kotae_models_check_refuses_a_pickled_embedder(pickled: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from kotae.cli import app

    result = CliRunner().invoke(app, ["models", "check", str(pickled["embedder"])])
    assert result.exit_code != 0
    assert isinstance(result.exception, KotaeError), result.output  # refused by kotae, not a crash
    message = str(result.exception)
    assert str(pickled["embedder"]) in message and "safetensors" in message and "\n" not in message
    with pytest.raises(KotaeError) as error:
        require_safetensors(pickled["embedder"], "embedder")
    _one_line_naming(error, pickled["embedder"])


def test_a_trapped_pickle_is_never_opened_neither_alone_nor_beside_safetensors(
    setup: TinySetup, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    trap = pickle.dumps(_Trap(marker))
    alone = tmp_path / "alone"
    shutil.copytree(setup.embedder, alone)
    for weights in alone.rglob("*.safetensors"):
        weights.unlink()
    (alone / "pytorch_model.bin").write_bytes(trap)
    with pytest.raises(KotaeError) as error:
        load_sentence_transformer(alone)
    _one_line_naming(error, alone)

    embedder, reader = tmp_path / "embedder", tmp_path / "reader"
    shutil.copytree(setup.embedder, embedder)
    shutil.copytree(setup.reader, reader)
    for folder in (embedder, reader):
        (folder / "pytorch_model.bin").write_bytes(trap)  # beside the real model.safetensors
    assert load_sentence_transformer(embedder).encode(["東京"]).shape == (1, 16)
    overrides = [_set("embedder.model", embedder), _set("reader.model", reader)]
    for extra in ([], ["reader.type=haystack"]):
        answerer = QuestionAnswerer.from_config(setup.config(CONFIGS / "default.yaml", [*overrides, *extra]))
        assert answerer.ask("富士山の高さは？")
    assert not marker.exists(), "a pickle was unpickled"


def test_no_code_runs_from_a_model_folder(setup: TinySetup, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = tmp_path / "embedder"
    shutil.copytree(setup.embedder, folder)
    (folder / "evil_model.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import BertConfig as EvilConfig, BertModel as EvilModel\n",
        encoding="utf-8",
    )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "evil_model.EvilConfig", "AutoModel": "evil_model.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    try:
        load_sentence_transformer(folder)
    except KotaeError as error:
        assert str(folder) in str(error) and "\n" not in str(error)
    assert not marker.exists(), "code from the model folder was run"

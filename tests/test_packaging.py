"""The wheel exposes one import name, ``kotae`` (plus its Haystack integration modules inside Haystack's
``haystack_integrations`` namespace package), and carries its shipped configs.

A real wheel is built from the project's own files and installed (``--no-deps``) into a fresh
virtual environment that sees this environment's dependencies (torch, Haystack, ...) as a plain
path, so nothing is downloaded and the repository itself is not importable there. The console script
then runs from a folder holding a ``pipeline.py``, the user's project that once shadowed kotae's
``pipeline`` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from kotae.config_files import resolve_config, shipped_config_names
from kotae.errors import KotaeError
from kotae.pipeline.config import load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = [
    "pyproject.toml",
    "README.md",
    "kotae",
    "pipeline",
    "indexing",
    "reader_training",
    "configs",
    "haystack_integrations",
]
INTEGRATION = [
    "haystack_integrations/document_stores/kotae/__init__.py",
    "haystack_integrations/components/retrievers/kotae/__init__.py",
    "haystack_integrations/components/readers/kotae/__init__.py",
    "haystack_integrations/components/embedders/kotae/__init__.py",
    "haystack_integrations/components/embedders/kotae/sentence_transformers.py",
]


def _fresh_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A new venv whose only extra path is this environment's site-packages (no .pth processing there)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    return python, env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:  # a copy, so the build writes nothing into the repository
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
    )
    (built,) = out.glob("kotae-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_and_the_shipped_configs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"kotae", "haystack_integrations"}
    # the integration ships only kotae's four modules: the namespace levels above them stay open
    # (no __init__.py), so transformers-haystack's and others' modules live beside them
    assert sorted(name for name in names if name.startswith("haystack_integrations/")) == sorted(INTEGRATION)
    for config in ("default", "dense", "bm25"):
        assert f"kotae/configs/pipeline/{config}.yaml" in names
    assert "kotae/pipeline/templates/index.html" in names
    assert "kotae/indexing/store.py" in names and "kotae/reader_training/decode.py" in names
    assert not [
        name for name in names if name.startswith("kotae/reader_training/device/")
    ]  # maintainers' tooling


def test_the_installed_wheel_runs_from_a_folder_holding_pipeline_py(wheel: Path, tmp_path: Path) -> None:
    python, env = _fresh_env(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        env=env,
    )
    project = tmp_path / "users_project"
    project.mkdir()
    (project / "pipeline.py").write_text("raise SystemExit('the user pipeline.py was imported')\n")
    (project / "indexing.py").write_text("raise SystemExit('the user indexing.py was imported')\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)

    where = run(str(python), "-c", "import kotae, kotae.pipeline; print(kotae.__file__); import pipeline")
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr  # not the repository
    assert "the user pipeline.py was imported" in where.stderr  # `pipeline` is the user's, not kotae's

    help_ = run(str(python.parent / "kotae"), "--help")
    assert help_.returncode == 0, help_.stderr
    assert "pipeline" in help_.stdout and "index" in help_.stdout
    as_module = run(str(python), "-m", "kotae", "--help")
    assert as_module.returncode == 0, as_module.stderr

    show = run(str(python.parent / "kotae"), "pipeline", "show", "--config", "default")
    assert show.returncode == 0, show.stderr
    assert "type: haystack_integrations.components.readers.kotae.KotaeExtractiveReader" in show.stdout
    assert "type: haystack_integrations.components.retrievers.kotae.KotaeEmbeddingRetriever" in show.stdout
    loads = run(str(python), "-c", LOADS_WITH_HAYSTACK_ALONE)
    assert loads.returncode == 0, loads.stderr


LOADS_WITH_HAYSTACK_ALONE = """
import subprocess, sys
from pathlib import Path
text = subprocess.run([str(Path(sys.executable).parent / "kotae"), "pipeline", "show"], capture_output=True,
                      text=True, check=True).stdout
from haystack import Pipeline
loaded = Pipeline.loads(text)  # Haystack's default allow-list, the installed wheel's modules
assert type(loaded.get_component("reader")).__module__ == "haystack_integrations.components.readers.kotae"
import haystack_integrations.components.readers.transformers  # transformers-haystack's, beside kotae's
"""


def test_config_names_resolve_to_the_shipped_files_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert shipped_config_names("pipeline") == ["bm25", "default", "dense"]
    for name in ("default", "dense", "bm25"):
        shipped = resolve_config(name, "pipeline")
        assert shipped.read_bytes() == (ROOT / "configs" / "pipeline" / f"{name}.yaml").read_bytes()
    assert load_pipeline_config("bm25").retriever.type == "bm25"
    own = tmp_path / "mine.yaml"
    own.write_text("retriever:\n  type: dense\n")
    assert load_pipeline_config(own).retriever.type == "dense"  # a path still works
    assert load_pipeline_config("mine.yaml").retriever.type == "dense"
    with pytest.raises(KotaeError, match="give a YAML path or one of: bm25, default, dense"):
        load_pipeline_config("hybird")
    with pytest.raises(KotaeError, match=r"config file not found: missing\.yaml"):
        load_pipeline_config("missing.yaml")


def test_each_package_names_its_public_api_and_imports_it_lazily() -> None:
    script = (
        "import importlib, sys\n"
        "for name in ('kotae', 'kotae.indexing', 'kotae.pipeline', 'kotae.reader_training'):\n"
        "    package = importlib.import_module(name)\n"
        "    assert package.__doc__ and len(package.__doc__) > 200, name\n"
        "    assert package.__all__ == sorted(package.__all__) and dir(package) == package.__all__, name\n"
        "heavy = sorted(m for m in ('torch', 'haystack', 'transformers', 'faiss') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "for name in ('kotae', 'kotae.indexing', 'kotae.pipeline', 'kotae.reader_training'):\n"
        "    package = importlib.import_module(name)\n"
        "    for public in package.__all__:\n"
        "        assert getattr(package, public).__name__ == public, (name, public)\n"
        "    try:\n"
        "        package.not_public\n"
        "    except AttributeError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

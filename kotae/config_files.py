"""What every kotae YAML config shares: reading the file, ``--set a.b=c`` overrides, and one-line
validation errors. Pipeline and training configs differ only in their pydantic models."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from kotae.errors import KotaeError

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The configs that travel inside the package (the repository's ``configs/``, linked as ``kotae/configs``)."""


def shipped_config_names(kind: str) -> list[str]:
    """Names of the shipped ``configs/<kind>/*.yaml`` files, sorted (``kind`` is ``pipeline`` or ``train``)."""
    return sorted(path.stem for path in (SHIPPED_CONFIGS / kind).glob("*.yaml"))


def resolve_config(value: str | Path, kind: str) -> Path:
    """A ``--config`` value as a file: an existing path as given, else a shipped config's name.

    ``default`` (``dense``, ``bm25``, ...) means ``configs/<kind>/default.yaml`` inside the installed
    package, so it works from any folder and from a wheel. A value that looks like a path (has a
    folder or a ``.yaml``/``.yml`` suffix) is returned unchanged and read as a path.
    """
    path = Path(value)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) != 1:
        return path
    shipped = SHIPPED_CONFIGS / kind / f"{path.name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_config_names(kind))
    raise KotaeError(
        f"--config {value}: no such file and no shipped {kind} config of that name; "
        f"give a YAML path or one of: {names}"
    )


def read_yaml_mapping(path: str | Path, expected: str) -> dict[str, Any]:
    """The mapping in a YAML file; ``expected`` names its keys for the error when it is not one."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KotaeError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise KotaeError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise KotaeError(f"{path}: expected a mapping of {expected}")
    return loaded or {}


def apply_overrides(raw: dict[str, Any], overrides: list[str], example: str) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a nested mapping, returning a copy."""
    result = dict(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KotaeError(f"--set {item!r}: expected KEY=VALUE, for example {example}")
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise KotaeError(f"--set {item!r}: the value is not valid YAML") from None
    return result


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest of ``choices`` (difflib), or ``""``.

    >>> did_you_mean("learning_rat", ["learning_rate", "seed"])
    "; did you mean 'learning_rate'?"
    """
    close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_at(model: type[BaseModel], location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``location`` (list indexes skipped), if any."""
    current: Any = model
    for part in location:
        if isinstance(part, int):
            continue
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        field = current.model_fields.get(part) if is_model else None
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """``X`` out of ``X``, ``X | None``, ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        inner = _inner_model(argument)
        if inner is not None:
            return inner
    return None


def describe_validation_error(
    error: ValidationError,
    source: str,
    example_config: str,
    model: type[BaseModel] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """One line: which key, which value, what is allowed; for an unknown key, the nearest valid one
    of ``model`` at that level (and of ``aliases``' names at the top level)."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        hint = ""
        holder = _model_at(model, tuple(first["loc"][:-1])) if model is not None else None
        if holder is not None:
            names = list(holder.model_fields)
            if len(first["loc"]) == 1:
                names += list(aliases or ())
            hint = did_you_mean(str(first["loc"][-1]), names)
        return f"{source}: unknown key {key!r}{hint or '; check the spelling'} (see {example_config})"
    if first["type"] == "missing":
        return f"{source}: required key {key!r} is missing"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        return f"{source}: {message}"
    return f"{source}: {key} = {first.get('input')!r} is not allowed: {message}"

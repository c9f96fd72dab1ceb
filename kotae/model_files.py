"""Model folders are untrusted files: weights load only from safetensors, and no code runs from them.

A ``pytorch_model.bin`` (or ``.pt``/``.pth``/``.ckpt``) is a pickle, and unpickling runs whatever it
holds; a ``config.json`` with ``auto_map`` names Python files in the folder. kotae reads neither:
every load passes :data:`SAFE_MODEL_KWARGS` (``use_safetensors=True``, ``trust_remote_code=False``),
and :func:`require_safetensors` refuses a folder without safetensors weights in one line naming it,
before any loader looks inside.

Example::

    model = load_sentence_transformer(Path("models/multilingual-e5-small"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kotae.errors import KotaeError

SAFE_MODEL_KWARGS: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
"""Keyword arguments for every ``from_pretrained`` of model weights (``model_kwargs`` of wrappers)."""
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(folder: str | Path, role: str) -> None:
    """Raise a one-line KotaeError unless the model folder ``folder`` keeps its weights as safetensors.

    Every sub-folder holding pickled weights (a sentence-transformers ``2_Dense/``, say) must hold
    safetensors too. A path that is not a folder (a hub id) is left to the loader, which is given
    :data:`SAFE_MODEL_KWARGS` and so refuses pickles all the same.

    :param folder: The model folder.
    :param role: What the model is for, for the message (``embedder``, ``reader``).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return
    files = [path for path in folder.rglob("*") if path.is_file()]
    safe = {path.parent for path in files if path.suffix == ".safetensors"}
    pickled = [path for path in files if path.suffix in PICKLED_SUFFIXES and path.parent not in safe]
    if safe and not pickled:
        return
    found = ", ".join(str(path.relative_to(folder)) for path in sorted(pickled)[:3])
    raise KotaeError(
        f"the {role} model folder {folder} has no safetensors weights"
        + (f" (only {found}, a pickle kotae never loads)" if found else "")
        + "; re-save it with save_pretrained(..., safe_serialization=True) or use a folder with model.safetensors"
    )


def load_sentence_transformer(folder: str | Path, device: str | None = None) -> Any:
    """A sentence-transformers model from a local folder: safetensors only, no code from the folder.

    :raises KotaeError: If the folder has no safetensors weights or cannot be loaded (one line).
    """
    from sentence_transformers import SentenceTransformer

    require_safetensors(folder, "embedder")
    try:
        return SentenceTransformer(
            str(folder),
            device=device or "cpu",
            trust_remote_code=False,
            local_files_only=True,
            model_kwargs={"use_safetensors": True},
        )
    except Exception as error:
        raise KotaeError(f"cannot load the embedder model from {folder} ({error})".splitlines()[0]) from None

"""A reader's ONNX forms: exported from its safetensors weights once, cached, read by ONNX Runtime.

``prepare_onnx(folder)`` exports the reader's ``BertForQuestionAnswering`` (or any
``AutoModelForQuestionAnswering``) to ONNX with dynamic batch and length (:data:`FLOAT_FILE`, float32),
and quantises its weight matrices to int8 with ONNX Runtime's dynamic quantisation
(:data:`ONNX_FILE`: int8 weights per output channel, activations quantised on the fly; the word
embeddings stay float32: quantising that 250k-row table cost 2-4 F1). Both live in
``$KOTAE_HOME/runtime/<name>-<key>/``. The key digests the weights file's size and modification
time, ``config.json``, the export recipe and the onnxruntime version, so a retrained or re-prepared
reader gets a new form and an unchanged one is never exported twice. The folder is built
atomically, like every prepared model (:func:`kotae.models.build_atomically`). Only the weights are
in the form: the tokenizer, settings and span-edge table stay in the reader folder.

Example::

    onnx_folder = prepare_onnx(Path("runs/reader"), load_model=lambda: load_model(Path("runs/reader")))
    session_file = onnx_folder / ONNX_FILE
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError

ONNX_FILE = "model-int8.onnx"
FLOAT_FILE = "model.onnx"
RECIPE = "onnx-opset17/fp32+dynamic-int8-matmul-per-channel/v2"
"""What :func:`export_int8` does; a change to it must change this string (it is part of the cache key)."""
OUTPUTS = ("start_logits", "end_logits")


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, or None when it is not installed (or cannot load)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def onnx_key(folder: Path) -> str:
    """The cache key of ``folder``'s ONNX forms, float32 and int8 (see the module docstring)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise KotaeError(f"{weights} is missing; the ONNX form is made from a reader's model.safetensors")
    stat = weights.stat()
    digest = hashlib.sha256()
    for part in (
        str(folder.resolve()),
        f"{stat.st_size}:{stat.st_mtime_ns}",
        (folder / "config.json").read_text(encoding="utf-8") if (folder / "config.json").is_file() else "-",
        RECIPE,
        onnxruntime_version() or "-",
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def onnx_folder(folder: Path) -> Path:
    """Where ``folder``'s ONNX forms (float32 and int8) live (prepared or not)."""
    from kotae.models import kotae_home  # imported here: the lent-GPU scripts run without kotae.models

    return kotae_home() / "runtime" / f"{folder.name}-{onnx_key(folder)}"


def is_onnx_prepared(folder: Path) -> bool:
    from kotae.models import STAMP

    target = onnx_folder(folder)
    return all((target / name).is_file() for name in (STAMP, ONNX_FILE, FLOAT_FILE))


def prepare_onnx(
    folder: Path, load_model: Callable[[], Any], log: Callable[[str], None] = lambda message: None
) -> Path:
    """The folder holding ``folder``'s ONNX forms (float32 and int8), exporting them first when they
    are not cached.

    :param folder: The reader folder (``model.safetensors``, ``config.json``, tokenizer).
    :param load_model: Loads the reader's torch model (called only when exporting).
    :param log: Receives one line when the export starts and one when it ends.
    """
    from kotae.models import build_atomically

    if onnxruntime_version() is None:
        raise KotaeError("onnxruntime is not installed; pip install onnxruntime, or use reader runtime torch")
    target = onnx_folder(folder)

    def fill(work: Path) -> dict[str, str]:
        export_int8(load_model(), input_names(folder), work / ONNX_FILE)
        return {"source": str(folder.resolve()), "recipe": RECIPE, "onnxruntime": onnxruntime_version() or ""}

    return build_atomically(target, fill, lambda: is_onnx_prepared(folder), log)[0]


def input_names(folder: Path) -> list[str]:
    """The model inputs the reader's tokenizer produces (``token_type_ids`` only where it makes them)."""
    path = folder / "tokenizer_config.json"
    names = ["input_ids", "token_type_ids", "attention_mask"]
    if path.is_file():
        names = json.loads(path.read_text(encoding="utf-8")).get("model_input_names", names)
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in names]


def export_int8(model: Any, inputs: list[str], target: Path) -> None:
    """Export ``model`` (a question-answering torch model) to :data:`FLOAT_FILE` beside ``target``
    (float32 ONNX), and that to ``target`` with its weight matrices int8 (dynamic quantisation)."""
    import logging
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> tuple[Any, Any]:
            output = self.inner(**dict(zip(inputs, tensors, strict=True)))
            return output.start_logits, output.end_logits

    model = model.to("cpu").float().eval()
    example = torch.ones((2, 16), dtype=torch.long)
    axes = {name: {0: "batch", 1: "length"} for name in (*inputs, *OUTPUTS)}
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about code paths, not our inputs
        full = target.parent / FLOAT_FILE
        with torch.no_grad():
            torch.onnx.export(
                Logits(model),
                tuple(example for _ in inputs),
                str(full),
                input_names=inputs,
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
        try:
            quantize_dynamic(
                str(full),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.setLevel(level)

"""How a reader's forward pass runs: windows in, start/end logits out, by torch or by ONNX Runtime.

Every runtime returns the same thing, one ``(start_logits, end_logits)`` pair per window trimmed to
its length, so :mod:`kotae.reader_training.decode` turns any of them into spans the same way. The
runtimes (``RUNTIMES``):

- ``torch``: the model as trained, float32 (the reference ``kotae evaluate`` has always scored);
- ``torch-bf16``: the same model under bfloat16 autocast (fast on CPUs with AVX-512 BF16);
- ``onnx-int8``: the model's int8 ONNX form (:mod:`kotae.reader_training.onnx_form`) on ONNX
  Runtime, the fastest on CPU; needs the ``onnxruntime`` package;
- ``onnx``: the model's float32 ONNX form on ONNX Runtime (torch's logits, faster);
- ``auto``: ``onnx-int8`` on a CPU with an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI, AMX:
  :mod:`kotae.cpu_features`) when onnxruntime is installed, else ``torch``; on a CUDA device ``torch``.
  (On an AVX2-only CPU int8 was no faster than torch float32, and its logits differ.)

Windows are read in length-sorted batches, each padded only to its longest window.

Example::

    runtime = open_runtime("auto", folder, tokenizer, load_model=lambda: load_model(folder))
    logits = runtime.window_logits(windows, batch_size=16)
    print(runtime.name)   # "onnx-int8", or "torch (onnxruntime not installed)"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kotae.cpu_features import cpu_flags, int8_dot_product
from kotae.errors import KotaeError
from kotae.progress import progress as progress_of
from kotae.reader_training.features import Window
from kotae.reader_training.onnx_form import FLOAT_FILE, ONNX_FILE, onnxruntime_version, prepare_onnx

RUNTIMES = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")

Logits = list[tuple[np.ndarray, np.ndarray]]


class ReaderRuntime:
    """Start/end logits for windows; subclasses run a model. ``name`` says which runtime answered."""

    name = "reader"

    def window_logits(
        self, windows: Sequence[Window], batch_size: int, progress: bool = False, pad_to: int | None = None
    ) -> Logits:
        """Start/end logits of every window (trimmed to its length), in the order given. Each batch is
        padded to its longest window, or to ``pad_to`` tokens when given."""
        raise NotImplementedError


class TorchRuntime(ReaderRuntime):
    """A torch question-answering model, float32 or under bfloat16 autocast (``bf16=True``)."""

    def __init__(self, model: Any, tokenizer: Any, bf16: bool = False, note: str = "") -> None:
        self.model, self.tokenizer, self.bf16 = model, tokenizer, bf16
        self.name = ("torch-bf16" if bf16 else "torch") + (f" ({note})" if note else "")

    def window_logits(
        self, windows: Sequence[Window], batch_size: int, progress: bool = False, pad_to: int | None = None
    ) -> Logits:
        return window_logits(self.model, self.tokenizer, windows, batch_size, progress, self.bf16, pad_to)


class OnnxRuntime(ReaderRuntime):
    """A reader's ONNX form in an ONNX Runtime CPU session (``threads``: intra-op threads, None for
    torch's thread count, which ``--threads`` and ``OMP_NUM_THREADS`` set)."""

    def __init__(self, model_file: Path, tokenizer: Any, name: str, threads: int | None = None) -> None:
        import onnxruntime

        self.name = name
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else _torch_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [node.name for node in self.session.get_inputs()]
        self.tokenizer = tokenizer

    def window_logits(
        self, windows: Sequence[Window], batch_size: int, progress: bool = False, pad_to: int | None = None
    ) -> Logits:
        results: Logits = [(np.empty(0), np.empty(0))] * len(windows)
        for batch_ids in _progress(length_batches(windows, batch_size), progress, len(windows), batch_size):
            batch = _pad(self.tokenizer, [windows[i] for i in batch_ids], pad_to, "np")
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.inputs}
            starts, ends = self.session.run(["start_logits", "end_logits"], feed)
            _trim_into(results, windows, batch_ids, starts, ends, self.tokenizer)
        return results


def open_runtime(
    kind: str,
    folder: Path,
    tokenizer: Any,
    load_model: Callable[[], Any],
    device: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ReaderRuntime:
    """The runtime ``kind`` (one of :data:`RUNTIMES`) for the reader in ``folder``.

    ``load_model`` loads the torch model (on ``device``): for the torch runtimes, and once to export
    the ONNX form when it is not cached. ``auto`` falls back to torch where onnxruntime is missing,
    the CPU has no int8 dot-product instruction or the device is CUDA; an explicit ``onnx-int8`` without onnxruntime is an error.
    """
    if kind not in RUNTIMES:
        raise KotaeError(f"reader runtime {kind!r} is unknown; use one of {', '.join(RUNTIMES)}")
    cuda = _cuda(device)
    if kind == "auto":
        if cuda:
            return _torch(load_model, tokenizer, device, note="auto on CUDA")
        if onnxruntime_version() is None:
            log("onnxruntime is not installed: the reader runs on torch (pip install onnxruntime for int8)")
            return _torch(load_model, tokenizer, device, note="onnxruntime not installed")
        if not int8_dot_product(cpu_flags()):
            return _torch(
                load_model, tokenizer, device, note="auto: no int8 dot-product instruction on this CPU"
            )
        kind = "onnx-int8"
    if kind in ("onnx", "onnx-int8"):
        if cuda:
            raise KotaeError(f"reader runtime {kind} runs on CPU only, not {device}; use runtime torch")
        onnx_dir = prepare_onnx(folder, lambda: load_model(), log)
        return OnnxRuntime(onnx_dir / (ONNX_FILE if kind == "onnx-int8" else FLOAT_FILE), tokenizer, kind)
    return _torch(load_model, tokenizer, device, bf16=kind == "torch-bf16")


def _torch(
    load_model: Callable[[], Any], tokenizer: Any, device: str | None, bf16: bool = False, note: str = ""
) -> TorchRuntime:
    import torch

    model = load_model()
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return TorchRuntime(model, tokenizer, bf16=bf16, note=note)


def _cuda(device: str | None) -> bool:
    if device is not None:
        return device.startswith("cuda")
    import torch

    return bool(torch.cuda.is_available())


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def length_batches(windows: Sequence[Window], batch_size: int) -> Iterator[list[int]]:
    """Window indices in batches of ``batch_size``, longest windows first (little padding)."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    for first in range(0, len(order), batch_size):
        yield order[first : first + batch_size]


def window_logits(
    model: Any,
    tokenizer: Any,
    windows: Sequence[Window],
    batch_size: int,
    progress: bool = False,
    bf16: bool = False,
    pad_to: int | None = None,
) -> Logits:
    """Start/end logits of a torch model for every window (trimmed to its length), in the order given;
    ``bf16`` runs under bfloat16 autocast; ``progress`` shows a bar on a terminal and lines in a log;
    each batch is padded to its longest window, or to ``pad_to`` tokens when given."""
    import contextlib

    import torch

    device = next(model.parameters()).device
    results: Logits = [(np.empty(0), np.empty(0))] * len(windows)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for batch_ids in _progress(
                length_batches(windows, batch_size), progress, len(windows), batch_size
            ):
                batch = _pad(tokenizer, [windows[i] for i in batch_ids], pad_to, "pt")
                output = model(**{k: v.to(device) for k, v in batch.items()})
                starts = output.start_logits.float().cpu().numpy()
                ends = output.end_logits.float().cpu().numpy()
                _trim_into(results, windows, batch_ids, starts, ends, tokenizer)
    finally:
        if was_training:
            model.train()
    return results


def _pad(tokenizer: Any, windows: Sequence[Window], pad_to: int | None, tensors: str) -> Any:
    """The windows' model inputs as one batch, padded to the longest window or to ``pad_to`` tokens
    (a window's logits depend on its padded length, not on the other windows of its batch)."""
    inputs = [window.model_inputs() for window in windows]
    if pad_to:
        return tokenizer.pad(inputs, padding="max_length", max_length=pad_to, return_tensors=tensors)
    return tokenizer.pad(inputs, padding=True, return_tensors=tensors)


def _trim_into(
    results: Logits,
    windows: Sequence[Window],
    batch_ids: list[int],
    starts: np.ndarray,
    ends: np.ndarray,
    tokenizer: Any,
) -> None:
    """Store each row of a padded batch's logits, cut to its window's length, at its window's index."""
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for row, index in enumerate(batch_ids):
        length = len(windows[index].input_ids)
        cut = slice(starts.shape[1] - length, None) if left else slice(0, length)
        results[index] = (starts[row, cut], ends[row, cut])


def _progress(
    batches: Iterator[list[int]], shown: bool, windows: int, batch_size: int
) -> Iterator[list[int]]:
    """``batches`` as they come, with progress shown when ``shown``: a bar on a terminal, lines in a
    log (:func:`kotae.progress.progress`)."""
    total = -(-windows // batch_size) if windows else 0
    with progress_of("reading batches", total, shown) as advance:
        for batch_ids in batches:
            yield batch_ids
            advance(1)

"""Train the reader from a device bundle, on a lent GPU (or, for tests and timing, on this CPU).

    python -m kotae.reader_training.device.train --bundle .device/bundle --out $OUT [--max-seconds 480]

Standalone on purpose: the device machine has Python with torch, transformers, numpy and
safetensors and nothing else (no pydantic, yaml, datasets, typer), so this imports only those,
the standard library and kotae's modules that need nothing more (:mod:`kotae.reader_training.device.bundle`,
:mod:`kotae.weight_files`, :mod:`kotae.e5s1`, :mod:`kotae.reader_weights`; dev scoring adds
:mod:`kotae.reader_training.evaluate`).
That is also why it is a compact hand loop rather than transformers' Trainer: Trainer wants a
``datasets``-style dataset and pulls in its own logging/checkpoint machinery, while a time-boxed
run needs three things Trainer does not give directly — a hard wall-clock stop that leaves time to
save, an LR schedule refitted to the steps the budget allows, and fp16 weight shards of at most
15 MiB written straight into ``$OUT``. It follows Trainer's recipe otherwise: AdamW (no decay on
biases and LayerNorm weights), linear warmup then linear decay, gradient clipping at 1.0,
length-grouped batches with dynamic padding, bf16 autocast on CUDA (fp32 on a CPU).

One difference, deliberate: the loss ignores padding positions (their logits are masked), so the
batch's padding never competes with the answer's tokens.

The model is ``BertForQuestionAnswering`` built from the bundle: encoder weights dequantised from
the E5S1 bytes and ``qa_outputs`` initialised from the config's seed, or, for a bundle that
continues a shipped reader, that reader's fp16 tensors from ``kotae/weights/`` in the travelling
tree; frozen word embeddings hold the used rows at their real ids (zeros elsewhere — never looked up). What comes back in ``--out``:
``weights-N.safetensors`` (fp16, every parameter but the word embeddings), ``run.json`` and
``train_log.jsonl``; a partial copy is written every ``--save-every`` seconds, so a run cut off by
the machine still returns weights (``run.json`` says ``"complete": false``).

When the bundle carries dev sets, the saved weights are then scored on them by kotae's own
evaluation code (``run.json`` → ``dev``), in fp32 on the fp16-rounded weights and at token edges (no
MeCab on the device) — the numbers ``kotae evaluate`` gives for the unpacked folder here without its
``span_edges.json``, which the unpack step learns (``--dev-seconds`` of the budget are kept
for it; ``--no-dev`` skips it). ``--no-weights`` makes a comparison run that returns only its
scores, so two runs fit the 8 files that come back from one device command.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the time budget counts from here, interpreter start-up aside

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from kotae.reader_training.device.bundle import (  # noqa: E402
    LOG_FILE,
    RUN_FILE,
    Bundle,
    BundleError,
    Features,
    encoder_state_dict,
    extract_tokenizer,
    read_bundle,
    read_dev_sets,
    used_word_rows,
)
from kotae.weight_files import HF_WORD_EMBEDDINGS, MAX_FILE_BYTES, shard  # noqa: E402

SAVE_MARGIN_SECONDS = 15.0
"""Stop training this long before the budget ends: saving three fp16 shards takes a few seconds."""
TIMING_FROM, TIMING_AT = 5, (25, 200, 1000)
"""Steps timed to fit the schedule to the budget: from step 5 (warm) to each of 25, 200 and 1000."""


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Batching and schedule (pure)


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: bool = True, mega: int = 50
) -> list[np.ndarray]:
    """One epoch of batches: shuffled; with ``group``, each run of ``mega`` batches is sorted by
    length before cutting (as transformers' LengthGroupedSampler), so padding stays small."""
    order = rng.permutation(len(lengths))
    if not group:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    span = batch_size * mega
    for first in range(0, len(order), span):
        chunk = order[first : first + span]
        chunk = chunk[np.argsort(-lengths[chunk].astype(np.int64), kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(
    features: Features,
    offsets: np.ndarray,
    used_ids: np.ndarray,
    rows: np.ndarray,
    pad_id: int,
    multiple: int = 8,
) -> dict[str, np.ndarray]:
    """Real token ids, attention mask (and token types) padded to the batch's longest window,
    rounded up to ``multiple``; start/end labels."""
    lengths = features.lengths[rows].astype(np.int64)
    width = int(math.ceil(lengths.max() / multiple) * multiple)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64) if features.token_type_ids is not None else None
    for row, (window, length) in enumerate(zip(rows.tolist(), lengths.tolist(), strict=True)):
        first = int(offsets[window])
        ids[row, :length] = used_ids[features.tokens[first : first + length]]
        mask[row, :length] = 1
        if types is not None and features.token_type_ids is not None:
            types[row, :length] = features.token_type_ids[first : first + length]
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "start_positions": features.start_positions[rows].astype(np.int64),
        "end_positions": features.end_positions[rows].astype(np.int64),
    }
    if types is not None:
        batch["token_type_ids"] = types
    return batch


TUNABLE = frozenset(
    {
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "batch_size",
        "gradient_accumulation_steps",
        "warmup_ratio",
        "weight_decay",
        "seed",
        "freeze_layers",
        "group_by_length",
        "precision",
        "logging_steps",
    }
)
"""Config keys ``--set`` may change on the device; the rest are fixed by the packed windows."""


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with ``KEY=VALUE`` overrides (VALUE parsed as JSON, else a string)."""
    result = dict(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in TUNABLE:
            raise ValueError(f"--set {item!r}: use KEY=VALUE with KEY one of {', '.join(sorted(TUNABLE))}")
        try:
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def planned_steps(config: dict[str, Any], batches_per_epoch: int) -> int:
    accumulation = int(config.get("gradient_accumulation_steps", 1))
    if int(config.get("max_steps", -1)) > 0:
        return int(config["max_steps"])
    per_epoch = math.ceil(batches_per_epoch / accumulation)
    return max(1, math.ceil(float(config["num_train_epochs"]) * per_epoch))


def fitted_steps(done: int, planned: int, seconds_per_step: float, seconds_left: float) -> int:
    """The total step count the remaining time allows (never more than planned, at least ``done + 1``)."""
    affordable = done + int(0.95 * seconds_left / max(seconds_per_step, 1e-9))
    return max(done + 1, min(planned, affordable))


# ---------------------------------------------------------------------------------------------
# Model and weights


def build_model(bundle: Bundle, seed: int) -> Any:
    """BertForQuestionAnswering from the bundle: the e5 encoder of ``base.safetensors`` with
    ``qa_outputs`` drawn from ``seed``, or every tensor of the shipped reader the bundle continues
    (:func:`shipped_reader_tensors`); word embeddings frozen, used rows only (the rest stay zero)."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    config_dict = dict(bundle.manifest["base"]["bert_config"])
    config_dict["architectures"] = ["BertForQuestionAnswering"]
    torch.manual_seed(seed)
    model = BertForQuestionAnswering(BertConfig(**config_dict))
    delta = bundle.manifest["base"].get("delta")
    if delta:
        tensors = shipped_reader_tensors(delta)
        used_rows = used_word_rows(bundle)
    else:
        state, used_rows = encoder_state_dict(bundle)
        tensors = {f"bert.{k}": torch.from_numpy(v) for k, v in state.items() if not k.startswith("pooler.")}
    word = np.zeros((model.config.vocab_size, used_rows.shape[1]), dtype=np.float32)
    word[bundle.used_ids] = used_rows
    tensors[HF_WORD_EMBEDDINGS] = torch.from_numpy(word)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - (set() if delta else {"qa_outputs.weight", "qa_outputs.bias"}):
        raise RuntimeError(
            f"bundle does not fit BertForQuestionAnswering: missing {missing}, extra {unexpected}"
        )
    model.get_input_embeddings().weight.requires_grad_(False)
    return model


def shipped_reader_tensors(delta: dict[str, Any]) -> dict[str, Any]:
    """The shipped reader's tensors (all but the word embeddings) as float32 torch tensors, read from
    this checkout's ``kotae/weights/ALIAS`` (tracked files: they travel with the working tree) after
    checking they are the weight files that were packed against (each file's sha256)."""
    import torch

    from kotae.errors import KotaeError
    from kotae.reader_weights import DELTA_FILE, WEIGHTS_DIR, read_delta

    folder = WEIGHTS_DIR / delta["alias"]
    shipped = json.loads((folder / DELTA_FILE).read_text()) if (folder / DELTA_FILE).is_file() else {}
    if shipped.get("files") != delta["files"]:
        raise BundleError(
            f"{folder}: not the shipped reader weights the bundle was packed against; pack again from this checkout"
        )
    try:
        _, tensors = read_delta(folder)  # each weight file against its sha256
    except KotaeError as error:
        raise BundleError(
            f"{error}: the tree's shipped reader is damaged; pack again from a clean checkout"
        ) from None
    return {name: torch.from_numpy(value.astype(np.float32)) for name, value in tensors.items()}


def trained_tensors(model: Any) -> dict[str, Any]:
    """Every parameter but the frozen word embeddings, as contiguous fp16 CPU tensors."""
    import torch

    result = {}
    for name, parameter in model.named_parameters():
        if name == HF_WORD_EMBEDDINGS:
            continue
        half = parameter.detach().to("cpu", torch.float16).contiguous()
        if not torch.isfinite(half).all():
            raise RuntimeError(f"{name} does not fit fp16 (inf/nan after conversion)")
        result[name] = half
    return result


def save_weights(tensors: dict[str, Any], out: Path, limit: int = MAX_FILE_BYTES) -> list[dict[str, Any]]:
    """Write ``weights-N.safetensors`` shards of at most ``limit`` bytes; each file is written under a
    temporary name and renamed, so a kill never leaves a half-written shard under the real name."""
    from safetensors.torch import save_file

    shards = shard(tensors, limit - 64 * 1024, nbytes=lambda tensor: tensor.numel() * tensor.element_size())
    written = []
    for number, group in enumerate(shards, start=1):
        name = f"weights-{number}.safetensors"
        partial = out / f"{name}.partial"
        save_file(group, str(partial), metadata={"format": "pt"})
        os.replace(partial, out / name)
        written.append({"file": name, "bytes": (out / name).stat().st_size, "tensors": len(group)})
    return written


def score_dev(
    model: Any, bundle_dir: Path, manifest: dict[str, Any], config: dict[str, Any], cuda: bool
) -> dict[str, dict[str, Any]]:
    """Score the bundle's dev sets with kotae's evaluation code (:mod:`kotae.reader_training.evaluate`,
    numpy and the standard library only), on the weights as they come back: trained tensors
    rounded to fp16, fp32 arithmetic (TF32 off), as ``kotae evaluate`` runs on a CPU."""
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from kotae.reader_training.data import example_from_record
    from kotae.reader_training.evaluate import DecodeSettings, evaluate_examples

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = AutoTokenizer.from_pretrained(extract_tokenizer(bundle_dir, Path(folder)))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != HF_WORD_EMBEDDINGS:
                parameter.copy_(parameter.half().float())
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    settings = DecodeSettings.from_train_config(config, batch_size=256 if cuda else None)
    results: dict[str, dict[str, Any]] = {}
    for label, records in read_dev_sets(bundle_dir, manifest).items():
        examples = [example_from_record(r, f"{label}-{i}") for i, r in enumerate(records)]
        began = time.monotonic()
        report = evaluate_examples(model, tokenizer, examples, settings, config.get("language", "auto"))
        results[label] = report.summary() | {"seconds": round(time.monotonic() - began, 2)}
        scores = results[label]
        log(f"dev {label}: EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f} (n={scores['n']})")
    return results


def write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------
# Training


def training_deadline(began: float, budget: float, dev_seconds: float) -> float:
    """When training must stop: the budget less the time to save (15 s, or a tenth of a short
    budget) and to score the dev sets afterwards (``dev_seconds``, 0 without scoring)."""
    return began + budget - (min(SAVE_MARGIN_SECONDS, 0.1 * budget) + dev_seconds)


def build_optimizer(model: Any, config: dict[str, Any], fused: bool) -> Any:
    """AdamW over the trainable parameters (the first ``freeze_layers`` encoder layers frozen), with
    weight decay on all but biases and LayerNorm, as transformers' Trainer sets it up."""
    import torch

    freeze = int(config.get("freeze_layers", 0))
    for layer in list(model.bert.encoder.layer)[:freeze]:
        layer.requires_grad_(False)
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(config["weight_decay"])},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(config["learning_rate"]),
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=fused,
    )


def span_loss(model: Any, batch: dict[str, Any], autocast: Any) -> Any:
    """The mean of the start and end cross-entropies, padding masked out of both softmaxes."""
    import torch.nn.functional as F

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with autocast:
        output = model(**inputs)
    masked = batch["attention_mask"] == 0
    start_logits = output.start_logits.float().masked_fill(masked, -1e4)
    end_logits = output.end_logits.float().masked_fill(masked, -1e4)
    return (
        F.cross_entropy(start_logits, batch["start_positions"])
        + F.cross_entropy(end_logits, batch["end_positions"])
    ) / 2


def run_record(setup: Setup, variant: str | None) -> dict[str, Any]:
    """What ``run.json`` says before the first step: the bundle, the config, the machine, the plan."""
    import torch
    import transformers

    bundle, config, target, model = setup.bundle, setup.config, setup.target, setup.model
    return {
        "complete": False,
        "bundle": {k: bundle.manifest[k] for k in ("created", "base")}
        | {k: bundle.section[k] for k in ("config_path", "overrides", "features", "data")}
        | {
            "variant": variant,
            "pack": bundle.manifest.get("pack", {}),
            "dev": bundle.manifest.get("dev", {}),
        },
        "train_config": config,
        "device": torch.cuda.get_device_name(target)
        if setup.cuda
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "precision": "bf16" if setup.bf16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "budget_seconds": setup.budget,
        "planned_steps": setup.planned,
        "trainable_parameters": sum(p.numel() for p in setup.trainable),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }


def fit_schedule(
    step: int,
    total: int,
    mark: tuple[int, float],
    now: float,
    deadline: float,
    sequences_per_step: int,
    run: dict[str, Any],
) -> int:
    """Fit the schedule to the budget: steps are timed from ``TIMING_FROM`` to each of ``TIMING_AT``,
    and when the planned steps cannot finish before the deadline, the decay ends where time runs
    out. Returns the (possibly cut) total; records the timing in ``run``."""
    per_step = (now - mark[1]) / (step - mark[0])
    fitted = fitted_steps(step, total, per_step, deadline - now)
    run.setdefault("ms_per_step", {})[str(step)] = round(per_step * 1000, 2)
    if step == TIMING_AT[0]:
        log(f"timing: {per_step * 1000:.1f} ms/step, {sequences_per_step / per_step:.0f} sequences/s")
    if fitted >= total:
        return total
    log(f"time budget: {per_step * 1000:.0f} ms/step, schedule cut from {total} to {fitted} steps")
    run["schedule_cut_at_step"] = step
    return fitted


@dataclass(frozen=True)
class TrainOptions:
    """How a device run trains (the command line's flags).

    ``overrides`` (``KEY=VALUE``, JSON values) change the optimisation hyperparameters of the packed
    config (:data:`TUNABLE`) without packing again; windowing is fixed by the bundle. With ``dev``
    and dev sets in the bundle, training stops ``dev_seconds`` earlier and the saved weights are
    scored on them (``run.json`` → ``dev``). ``weights=False`` saves no weights (a comparison run
    whose dev scores are all that is needed, leaving the 8 returned files to another run).
    ``variant`` trains on the windows and with the config of a variant packed in the bundle.
    """

    max_seconds: float | None = None
    max_steps: int | None = None
    device: str | None = None
    save_every: float = 120.0
    threads: int | None = None
    overrides: Sequence[str] = ()
    dev: bool = True
    dev_seconds: float = 45.0
    weights: bool = True
    variant: str | None = None


@dataclass(frozen=True)
class Setup:
    """What a device run trains with, read from the bundle and the options before the first step."""

    bundle: Bundle
    config: dict[str, Any]
    budget: float
    scoring: bool
    deadline: float
    target: Any
    bf16: bool
    model: Any
    optimizer: Any
    trainable: list[Any]
    per_epoch: int
    planned: int

    @property
    def cuda(self) -> bool:
        return bool(self.target.type == "cuda")

    @property
    def batch_size(self) -> int:
        return int(self.config["batch_size"])

    @property
    def accumulation(self) -> int:
        return int(self.config.get("gradient_accumulation_steps", 1))


def set_up(bundle_dir: str | Path, options: TrainOptions, began: float) -> Setup:
    """Read the bundle, apply the overrides, pick the device and precision, build the model and
    optimiser (:func:`build_optimizer`) and count the planned steps."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    bundle = read_bundle(bundle_dir, variant=options.variant)
    config = apply_overrides(bundle.train_config, options.overrides)
    budget = float(options.max_seconds if options.max_seconds is not None else bundle.manifest["max_seconds"])
    scoring = options.dev and bool(bundle.manifest.get("dev", {}).get("sets"))
    target = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = target.type == "cuda"
    precision = str(config.get("precision", "auto"))
    bf16 = (cuda and precision != "fp32") or (not cuda and precision == "bf16")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(
        f"bundle {bundle_dir}: {len(bundle.features)} windows, {len(bundle.used_ids)} token ids; "
        f"device {target}, {'bf16 autocast' if bf16 else 'fp32'}, budget {budget:.0f} s"
    )

    model = build_model(bundle, int(config["seed"])).to(target)
    model.train()
    optimizer = build_optimizer(model, config, fused=cuda)
    batch_size = int(config["batch_size"])
    group = bool(config.get("group_by_length", True))
    per_epoch = len(
        length_grouped_batches(bundle.features.lengths, batch_size, np.random.default_rng(0), group)
    )
    planned = planned_steps(config, per_epoch)
    if options.max_steps is not None:
        planned = options.max_steps
    accumulation = int(config.get("gradient_accumulation_steps", 1))
    log(
        f"{planned} steps planned ({per_epoch} batches of {batch_size} per epoch, accumulation {accumulation})"
    )
    return Setup(
        bundle=bundle,
        config=config,
        budget=budget,
        scoring=scoring,
        deadline=training_deadline(began, budget, options.dev_seconds if scoring else 0.0),
        target=target,
        bf16=bf16,
        model=model,
        optimizer=optimizer,
        trainable=[p for group_ in optimizer.param_groups for p in group_["params"]],
        per_epoch=per_epoch,
        planned=planned,
    )


class TrainLoop:
    """The hand training loop and its running state: step and sequence counters, the loss being
    averaged for the log, and the schedule's length (cut by :func:`fit_schedule` when the budget
    cannot hold it). ``run`` is the ``run.json`` record that :meth:`checkpoint` completes and writes."""

    def __init__(self, setup: Setup, options: TrainOptions, out: Path, run: dict[str, Any], began: float):
        import torch

        self.setup, self.options, self.out, self.run, self.began = setup, options, out, run, began
        self.step = self.micro = self.sequences = self.tokens = 0
        self.loss_sum = torch.zeros((), device=setup.target)
        self.loss_count = 0
        self.losses: list[float] = []
        self.stop_reason = "schedule"
        self.total = setup.planned
        self.timing_mark: tuple[int, float] | None = None
        self.started = time.monotonic()
        self.last_save = self.step_ended = self.started
        self.used_ids = setup.bundle.used_ids.astype(np.int64)
        self.log_path = out / LOG_FILE
        self.log_path.unlink(missing_ok=True)

    def train(self) -> None:
        """Length-grouped epochs until the schedule ends or the next step would end past the
        deadline (a CPU step can take a minute); a partial checkpoint every ``save_every`` seconds."""
        import torch

        setup = self.setup
        autocast = torch.autocast(setup.target.type, dtype=torch.bfloat16, enabled=setup.bf16)
        rng = np.random.default_rng(int(setup.config["seed"]))
        group = bool(setup.config.get("group_by_length", True))
        setup.optimizer.zero_grad(set_to_none=True)
        while True:
            for rows in length_grouped_batches(setup.bundle.features.lengths, setup.batch_size, rng, group):
                self.forward_backward(rows, autocast)
                if self.micro % setup.accumulation:
                    continue
                rate = self.optimizer_step()
                now = time.monotonic()
                self.log_step(rate)
                now = self.fit_to_budget(now)
                if self.step >= self.total:
                    return
                step_seconds, self.step_ended = now - self.step_ended, now
                if now + step_seconds >= setup.deadline:
                    self.stop_reason = "time budget"
                    return
                if self.options.save_every and now - self.last_save >= self.options.save_every:
                    self.checkpoint(complete=False)
                    self.last_save = time.monotonic()

    def forward_backward(self, rows: np.ndarray, autocast: Any) -> None:
        """One micro-batch: collate, the span loss (:func:`span_loss`), its scaled gradient."""
        import torch

        setup = self.setup
        features = setup.bundle.features
        pad_id = int(setup.bundle.manifest["pad_token_id"])
        arrays = collate(features, features.offsets, self.used_ids, rows, pad_id)
        batch = {k: torch.from_numpy(v).to(setup.target, non_blocking=True) for k, v in arrays.items()}
        loss = span_loss(setup.model, batch, autocast)
        (loss / setup.accumulation).backward()
        self.loss_sum += loss.detach()
        self.loss_count += 1
        self.sequences += len(rows)
        self.tokens += int(arrays["attention_mask"].sum())
        self.micro += 1

    def optimizer_step(self) -> float:
        """Set this step's learning rate (:func:`learning_rate`), clip gradients at 1.0, step; returns the rate."""
        import torch

        setup = self.setup
        warmup = math.ceil(float(setup.config["warmup_ratio"]) * self.total)
        rate = learning_rate(self.step, self.total, warmup, float(setup.config["learning_rate"]))
        for group in setup.optimizer.param_groups:
            group["lr"] = rate
        torch.nn.utils.clip_grad_norm_(setup.trainable, 1.0)
        setup.optimizer.step()
        setup.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return rate

    def log_step(self, rate: float) -> None:
        """Every ``logging_steps`` (and at the first and last step): the mean loss since the last
        record, appended to ``train_log.jsonl``; every 20 records also a line on the console."""
        logging_steps = int(self.setup.config.get("logging_steps", 10))
        step, total = self.step, self.total
        if not (step % logging_steps == 0 or step == 1 or step >= total):
            return
        mean = float(self.loss_sum) / self.loss_count  # syncs the device
        self.losses.append(mean)
        self.loss_sum.zero_()
        self.loss_count = 0
        seconds = time.monotonic() - self.started
        record = {
            "step": step,
            "epoch": round(step * self.setup.accumulation / max(self.setup.per_epoch, 1), 4),
            "loss": round(mean, 5),
            "learning_rate": rate,
            "seconds": round(seconds, 2),
            "sequences_per_second": round(self.sequences / max(seconds, 1e-9), 2),
        }
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if step == 1 or step % (logging_steps * 20) == 0 or step >= total:
            log(
                f"step {step}/{total} loss {mean:.4f} lr {rate:.2e} {self.sequences / max(seconds, 1e-9):.1f} seq/s"
            )

    def fit_to_budget(self, now: float) -> float:
        """At the timing steps (:data:`TIMING_FROM`, :data:`TIMING_AT`): mark the start, or cut the
        schedule to what the budget allows (:func:`fit_schedule`). Returns the time now."""
        import torch

        if self.step != TIMING_FROM and (self.timing_mark is None or self.step not in TIMING_AT):
            return now
        if self.setup.cuda:
            torch.cuda.synchronize()
        now = time.monotonic()
        if self.step == TIMING_FROM:
            self.timing_mark = (self.step, now)
        else:
            assert self.timing_mark is not None
            per_step = self.setup.batch_size * self.setup.accumulation
            self.total = fit_schedule(
                self.step, self.total, self.timing_mark, now, self.setup.deadline, per_step, self.run
            )
        return now

    def finish(self) -> None:
        """The loss of the steps since the last record, then the complete checkpoint."""
        if self.loss_count:
            self.losses.append(float(self.loss_sum) / self.loss_count)
        self.checkpoint(complete=True)

    def checkpoint(self, complete: bool) -> None:
        """Fill in ``run.json``'s progress and speed, save the fp16 shards (unless ``weights`` is
        off) and write ``run.json``; a partial one says ``"complete": false``."""
        import torch

        setup = self.setup
        if setup.cuda:
            torch.cuda.synchronize()
        now = time.monotonic()
        seconds = now - self.started
        self.run.update(
            complete=complete,
            global_step=self.step,
            total_steps=self.total,
            epochs=self.step * setup.accumulation / max(setup.per_epoch, 1),
            stop_reason=self.stop_reason if complete else "checkpoint",
            sequences=self.sequences,
            train_seconds=seconds,
            sequences_per_second=self.sequences / max(seconds, 1e-9),
            tokens_per_second=self.tokens / max(seconds, 1e-9),
            wall_seconds=now - self.began,
            process_cpu_seconds=time.process_time(),
            final_loss=self.losses[-1] if self.losses else None,
            peak_memory_gb=torch.cuda.max_memory_allocated(setup.target) / 1e9 if setup.cuda else None,
        )
        self.run["weights"] = (
            save_weights(trained_tensors(setup.model), self.out) if self.options.weights else []
        )
        write_json(self.out / RUN_FILE, self.run)


def train(
    bundle_dir: str | Path,
    out_dir: str | Path,
    options: TrainOptions = TrainOptions(),
    started: float | None = None,
) -> dict[str, Any]:
    """Train from the bundle into ``out_dir`` as ``options`` say; returns what ``run.json`` holds.

    The budget counts from ``started`` (``time.monotonic()``; the command line passes the moment
    this module was imported), else from the call. Steps: set up (:func:`set_up`), train
    (:class:`TrainLoop`), save the complete fp16 shards, score the dev sets (:func:`score_dev`).
    """
    began = time.monotonic() if started is None else started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup = set_up(bundle_dir, options, began)
    run = run_record(setup, options.variant)
    run["arguments"] = {
        "max_seconds": options.max_seconds,
        "max_steps": options.max_steps,
        "overrides": list(options.overrides),
        "no_dev": not options.dev,
        "no_weights": not options.weights,
        "variant": options.variant,
    }

    loop = TrainLoop(setup, options, out, run, began)
    loop.train()
    loop.finish()
    log(
        f"done: {loop.step} steps ({run['epochs']:.2f} epochs, stop: {loop.stop_reason}), "
        f"{run['sequences_per_second']:.1f} seq/s, loss {run['final_loss']}, "
        f"weights {[w['file'] for w in run['weights']]} in {out}"
    )
    if setup.scoring:
        try:
            run["dev"] = score_dev(
                setup.model, Path(bundle_dir), setup.bundle.manifest, setup.config, setup.cuda
            )
        except Exception as error:  # the weights are saved: report, and let a chained run go on
            run["dev_error"] = f"{type(error).__name__}: {error}"
            log(f"dev scoring failed ({run['dev_error']}); score the unpacked reader with kotae evaluate")
        run["wall_seconds"] = time.monotonic() - began
        write_json(out / RUN_FILE, run)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kotae.reader_training.device.train",
        description="Train the reader from a device bundle.",
    )
    parser.add_argument(
        "--bundle",
        default=".device/bundle",
        help="bundle folder made by python -m kotae.reader_training.device.pack",
    )
    parser.add_argument("--out", required=True, help="where the fp16 weights, run.json and the log go ($OUT)")
    parser.add_argument("--max-seconds", type=float, help="time budget from start-up to saved weights")
    parser.add_argument("--max-steps", type=int, help="override the step count (smoke tests)")
    parser.add_argument(
        "--steps-like",
        metavar="RUN_JSON",
        help="train as many steps as the run that wrote this run.json (a comparison of equal length)",
    )
    parser.add_argument("--device", help="torch device (default: cuda when present)")
    parser.add_argument(
        "--save-every", type=float, default=120.0, help="partial save interval, seconds (0: off)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="KEY=VALUE (JSON) override of an optimisation hyperparameter, e.g. batch_size=64",
    )
    parser.add_argument("--variant", help="train on a variant packed in the bundle (pack --variant)")
    parser.add_argument("--no-dev", action="store_true", help="do not score the bundle's dev sets")
    parser.add_argument(
        "--dev-seconds", type=float, default=45.0, help="time kept for dev scoring at the end (default 45)"
    )
    parser.add_argument(
        "--no-weights", action="store_true", help="save no weights (a comparison run: dev scores only)"
    )
    args = parser.parse_args(argv)
    try:
        apply_overrides({}, args.overrides)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.steps_like:
        try:
            args.max_steps = int(json.loads(Path(args.steps_like).read_text())["global_step"])
        except (OSError, ValueError, KeyError) as error:
            print(f"error: --steps-like {args.steps_like}: no global_step to copy ({error})", file=sys.stderr)
            return 2
    try:
        options = TrainOptions(
            max_seconds=args.max_seconds,
            max_steps=args.max_steps,
            device=args.device,
            save_every=args.save_every,
            threads=args.threads,
            overrides=args.overrides,
            dev=not args.no_dev,
            dev_seconds=args.dev_seconds,
            weights=not args.no_weights,
            variant=args.variant,
        )
        train(args.bundle, args.out, options, started=STARTED)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

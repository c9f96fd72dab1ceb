"""Device training round trip on the CPU: pack a tiny bundle with the real e5-small base, train three
steps in a subprocess that cannot import the packages the GPU machine lacks, unpack, load.

Also proves the bundle is exact: the used word-embedding rows and every encoder tensor rebuilt from
it equal the prepared base, and the compact features decode back to ``prepare_train_features``."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kotae.reader_training.device.bundle import WORD_TENSOR, read_bundle, row_slices, window_slices
from kotae.reader_training.device.train import fitted_steps, learning_rate, length_grouped_batches
from kotae.weight_files import HF_WORD_EMBEDDINGS, MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parents[1]

# Not on the GPU machine (or not wanted there): the device script must run without them.
BLOCKED = ["pydantic", "datasets", "haystack", "typer", "fastapi", "faiss", "matplotlib", "kotae.models"]
BLOCKED += ["kotae.reader_training.config", "kotae.reader_training.train"]


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_length_grouped_batches_cover_every_window_once() -> None:
    lengths = np.random.default_rng(1).integers(10, 256, size=1003)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(0), group=True, mega=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    assert all(1 <= len(b) <= 16 for b in batches)
    # within a group of 4 batches lengths are sorted, so padding per batch is small
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    shuffled = length_grouped_batches(lengths, 16, np.random.default_rng(0), group=False)
    assert spread < np.mean([lengths[b].max() - lengths[b].min() for b in shuffled])


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    rates = [learning_rate(step, 10, 2, 1.0) for step in range(10)]
    assert rates[:3] == [0.5, 1.0, 1.0]
    assert rates[-1] == pytest.approx(1 / 8)
    assert learning_rate(10, 10, 2, 1.0) == 0.0
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))


def test_fitted_steps_cuts_the_schedule_to_the_budget() -> None:
    assert fitted_steps(done=25, planned=1000, seconds_per_step=0.1, seconds_left=1000) == 1000
    assert fitted_steps(done=25, planned=1000, seconds_per_step=1.0, seconds_left=100) == 25 + 95
    assert fitted_steps(done=25, planned=1000, seconds_per_step=10.0, seconds_left=1) == 26


def test_shards_stay_under_the_file_limit() -> None:
    parts = row_slices(100_000, 220, limit=MAX_FILE_BYTES)
    assert parts[0].start == 0 and parts[-1].stop == 100_000
    assert all((p.stop - p.start) * 220 <= MAX_FILE_BYTES for p in parts)
    lengths = np.full(10, 100)
    groups = window_slices(lengths, 2, limit=450)
    assert [(g.start, g.stop) for g in groups] == [(i, i + 2) for i in range(0, 10, 2)]


# ---------------------------------------------------------------------------------------------
# With the real base (slow)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, e5_small_dir: Path) -> Path:
    from kotae.reader_training.device.pack import pack

    folder = tmp_path_factory.mktemp("device") / "bundle"
    overrides = [
        "base_model=multilingual-e5-small",
        f"train_data=[{{path: {shared_data / 'jaquad' / 'train'}, max_examples: 40}}]",
        f"dev_data=[{{path: {shared_data / 'jaquad' / 'dev'}, name: jaquad-dev, max_examples: 10}}]",
        "max_length=128",
        "stride=32",
        "batch_size=2",
        "logging_steps=1",
        "freeze_word_embeddings=true",
        "learning_rate=1e-4",
    ]
    # a variant: fewer questions, other windowing (the dev vocabulary must cover both)
    variant = folder.parent / "small.yaml"
    variant.write_text(
        "\n".join(
            o.replace("=", ": ", 1)
            for o in overrides
            if not o.startswith(("train_data", "max_length", "stride"))
        )
        + f"\ntrain_data: [{{path: {shared_data / 'jaquad' / 'train'}, max_examples: 15}}]"
        + "\nmax_length: 96\nstride: 24\n"
    )
    result = pack(
        None, overrides, folder, max_seconds=300, log=lambda message: None, variants={"small": variant}
    )
    assert result.total_bytes < 20 * 2**20
    return folder


@pytest.mark.slow
def test_bundle_rows_and_encoder_equal_the_prepared_base(tiny_bundle: Path, e5_small_dir: Path) -> None:
    from safetensors.numpy import load_file

    from kotae.e5s1 import dequantize_q4_0, read_e5s1
    from kotae.reader_training.device.bundle import encoder_state_dict
    from kotae.reader_training.device.pack import e5s1_source

    bundle = read_bundle(tiny_bundle)
    used = bundle.used_ids
    assert np.all(np.diff(used) > 0) and {0, 1, 2, 3} <= set(used.tolist())

    e5 = read_e5s1(e5s1_source())
    hidden, vocab = e5.header.hidden, e5.header.vocab
    table = np.frombuffer(e5.tensors[WORD_TENSOR][2], dtype=np.uint8).reshape(vocab, -1)
    assert np.array_equal(bundle.word_rows, table[used])
    full = dequantize_q4_0(table[used].tobytes(), len(used) * hidden).reshape(len(used), hidden)

    state, used_rows = encoder_state_dict(bundle)
    assert np.array_equal(used_rows, full)  # exact, not approximately

    base = load_file(str(e5_small_dir / "model.safetensors"))
    assert np.array_equal(base["embeddings.word_embeddings.weight"][used], used_rows)
    assert set(state) == set(base) - {"embeddings.word_embeddings.weight"}
    for name, value in state.items():
        assert np.array_equal(value, base[name]), name


@pytest.mark.slow
def test_features_decode_back_to_prepare_train_features(tiny_bundle: Path, e5_small_dir: Path) -> None:
    from transformers import AutoTokenizer

    from kotae.reader_training.config import load_train_config
    from kotae.reader_training.data import load_examples
    from kotae.reader_training.features import prepare_eval_features, prepare_train_features
    from kotae.reader_training.train import load_training_examples

    tokenizer = AutoTokenizer.from_pretrained(e5_small_dir)
    for variant in (None, "small"):
        bundle = read_bundle(tiny_bundle, variant=variant)
        c = bundle.train_config
        config = load_train_config(None, [f"train_data={json.dumps(c['train_data'])}"])
        examples, _ = load_training_examples(config, log=lambda message: None)
        expected = prepare_train_features(
            tokenizer,
            examples,
            c["max_length"],
            c["stride"],
            c["max_question_length"],
            c["negative_window_ratio"],
            c["seed"],
        ).columns
        f = bundle.features
        assert f.tokens.dtype == np.uint16
        windows = [
            bundle.used_ids[f.tokens[o : o + n]].tolist()
            for o, n in zip(f.offsets, f.lengths.tolist(), strict=True)
        ]
        assert windows == expected["input_ids"], variant
        assert f.start_positions.tolist() == expected["start_positions"]
        assert f.end_positions.tolist() == expected["end_positions"]
        # the tokens of the dev windows, as this set's windowing cuts them, are in the vocabulary too
        source = bundle.manifest["train_config"]["dev_data"][0]
        dev = load_examples(source["path"], max_examples=source["max_examples"]).examples
        dev_windows = prepare_eval_features(
            tokenizer, dev, c["max_length"], c["stride"], c["max_question_length"]
        )
        assert {t for w in dev_windows for t in w.input_ids} <= set(bundle.used_ids.tolist())
    assert bundle.train_config["max_length"] == 96 and len(bundle.features) != len(
        read_bundle(tiny_bundle).features
    )


def _run_device_train(bundle: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    blocker = f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
    runner = (
        blocker
        + "import runpy\n"
        + f"sys.argv = ['device_train', '--bundle', {str(bundle)!r}, '--out', {str(out)!r}, "
        + "'--max-steps', '3', '--device', 'cpu', '--threads', '2', '--max-seconds', '1200', "
        + f"*{list(extra)!r}]\n"
        + "runpy.run_module('kotae.reader_training.device.train', run_name='__main__')\n"
    )
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", runner], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500
    )


@pytest.mark.slow
def test_device_train_then_unpack_gives_a_loadable_reader(
    tiny_bundle: Path, e5_small_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForQuestionAnswering

    from kotae.reader_training.device.unpack import unpack
    from kotae.reader_training.evaluate import evaluate_folder

    out = tmp_path / "OUT"
    completed = _run_device_train(tiny_bundle, out)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    # What comes back: few files, plain names, each at most 16 MiB, weights in fp16.
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    run: dict[str, Any] = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 3 and run["stop_reason"] == "schedule"
    returned: dict[str, np.ndarray] = {}
    for weights in run["weights"]:
        returned |= load_file(str(out / weights["file"]))
    assert {v.dtype for v in returned.values()} == {np.dtype(np.float16)}
    assert HF_WORD_EMBEDDINGS not in returned and "qa_outputs.weight" in returned
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)

    folder = unpack(out, tmp_path / "reader", log=lambda message: None)
    model, info = AutoModelForQuestionAnswering.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    parameters = dict(model.named_parameters())
    for name, value in returned.items():
        assert torch.equal(parameters[name].detach(), torch.from_numpy(value.astype(np.float32))), name
    base = load_file(str(e5_small_dir / "model.safetensors"))
    assert np.array_equal(
        parameters[HF_WORD_EMBEDDINGS].detach().numpy(), base["embeddings.word_embeddings.weight"]
    )
    # training changed the encoder, and the folder carries what kotae evaluate needs
    query = base["encoder.layer.11.attention.self.query.weight"]
    assert not np.array_equal(
        returned["bert.encoder.layer.11.attention.self.query.weight"], query.astype(np.float16)
    )
    settings = json.loads((folder / "reader_config.json").read_text())
    assert settings["max_length"] == 128 and settings["stride"] == 32
    assert (folder / "tokenizer.json").is_file() and (folder / "README.md").is_file()
    # the span-edge table is learnt here from the run's training labels, as kotae train learns it
    assert json.loads((folder / "span_edges.json").read_text())["min_support"] == 20
    # the dev scores measured by the device run (at token edges: no MeCab there) are what kotae
    # evaluate measures on the unpacked reader without its table
    (folder / "span_edges.json").rename(tmp_path / "span_edges.json")
    report = evaluate_folder(str(folder), str(shared_data / "jaquad" / "dev"), limit=10, device="cpu")
    assert report.settings["max_length"] == 128
    assert "dev" in run, run.get("dev_error")  # e.g. an import the device run blocks
    device_scores = run["dev"]["jaquad-dev"]
    assert {k: device_scores[k] for k in ("exact_match", "f1", "n")} == {
        k: report.summary()[k] for k in ("exact_match", "f1", "n")
    }
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["dev"]["jaquad-dev"]["n"] == 10


@pytest.mark.slow
def test_variant_comparison_run_returns_scores_only_and_fits_its_schedule(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kotae.reader_training.device import train as device_train

    # time steps 1..2 and pretend the budget allows one more step: the schedule is cut to 3
    monkeypatch.setattr(device_train, "TIMING_FROM", 1)
    monkeypatch.setattr(device_train, "TIMING_AT", (2,))
    monkeypatch.setattr(device_train, "fitted_steps", lambda done, planned, per_step, left: done + 1)
    # main() counts the budget from the module's import, as in a fresh process; in this test process
    # that import may be minutes old on a busy machine, which would end the run on "time budget"
    monkeypatch.setattr(device_train, "STARTED", time.monotonic())
    first = tmp_path / "first"
    first.mkdir()
    (first / "run.json").write_text(json.dumps({"global_step": 10}))
    out = tmp_path / "OUT" / "small-only"
    arguments = ["--bundle", str(tiny_bundle), "--out", str(out), "--variant", "small", "--device", "cpu"]
    arguments += ["--steps-like", str(first / "run.json"), "--no-weights", "--no-dev", "--threads", "2"]
    assert device_train.main([*arguments, "--set", "batch_size=1"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == [] and run["bundle"]["variant"] == "small"
    assert run["train_config"]["max_length"] == 96 and run["train_config"]["batch_size"] == 1
    assert run["planned_steps"] == 10 and run["schedule_cut_at_step"] == 2 and run["global_step"] == 3
    assert set(run["ms_per_step"]) == {"2"} and run["stop_reason"] == "schedule"
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "train_log.jsonl"]
    assert device_train.main(["--bundle", str(tiny_bundle), "--out", str(out), "--variant", "nope"]) == 2


def test_the_travelling_tree_counts_tracked_and_untracked_files_not_ignored_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kotae.errors import KotaeError
    from kotae.reader_training.device.pack import Travel, _check_size, travel

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above tmp_path counts
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")  # nor a global ignore rule
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*arguments: str) -> None:
        subprocess.run(["git", *arguments], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    (repo / ".gitignore").write_text(".device/\n")  # 9 bytes
    (repo / "tracked.bin").write_bytes(b"x" * 1000)
    git("add", ".gitignore", "tracked.bin")
    (repo / "untracked.txt").write_bytes(b"y" * 100)
    (repo / ".device").mkdir()
    (repo / ".device" / "old.bin").write_bytes(b"z" * 5000)
    (repo / "sub").mkdir()
    trip = travel(repo / ".device" / "bundle")
    assert trip == Travel(1109, ".device/bundle") and trip.room == 64 * 2**20 - 1109
    with pytest.raises(KotaeError, match="would travel twice"):
        travel(repo / "sub" / "bundle")  # not ignored: in the tree and carried
    outside = tmp_path / "plain" / "bundle"
    assert travel(outside).carry is None  # measured from kotae's own checkout (or its weights)

    files = {"vocab-000.safetensors": 10 * 2**20, "features-000.npz": 11 * 2**20}
    _check_size(tmp_path, files, Travel(42 * 2**20, ".device/bundle"))  # 22 MiB room: fits
    with pytest.raises(KotaeError, match=r"only 20\.0 MiB can travel beside the 44\.0 MiB working tree"):
        _check_size(tmp_path, files, Travel(44 * 2**20, ".device/bundle"))


@pytest.mark.slow
def test_a_bundle_continuing_the_shipped_reader_starts_from_its_tracked_weights(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No base.safetensors travels: the device loads the shipped reader's fp16 tensors from the tree.
    Three steps at learning rate 0 return them unchanged, and the unpacked folder is the prepared reader."""
    from safetensors.numpy import load_file

    from kotae import reader_weights
    from kotae.models import prepare
    from kotae.reader_training.device.bundle import BASE_FILE
    from kotae.reader_training.device.pack import pack
    from kotae.reader_training.device.unpack import unpack
    from kotae.reader_training.evaluate import evaluate_folder
    from kotae.reader_weights import WEIGHTS_DIR, read_delta

    prepared = prepare("reader-e5-small-ja-en")[0]
    bundle = tmp_path / "bundle"
    overrides = [
        "base_model=reader-e5-small-ja-en",
        f"train_data=[{{path: {shared_data / 'jaquad' / 'train'}, max_examples: 20}}]",
        f"dev_data=[{{path: {shared_data / 'jaquad' / 'dev'}, name: jaquad-dev, max_examples: 10}}]",
        "max_length=128",
        "stride=32",
        "batch_size=2",
        "freeze_word_embeddings=true",
    ]
    result = pack(None, overrides, bundle, max_seconds=300, log=lambda message: None)
    assert BASE_FILE not in result.files
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["base"]["delta"]["alias"] == "reader-e5-small-ja-en" and manifest["tensors"] == {}

    out = tmp_path / "OUT"
    completed = _run_device_train(bundle, out, "--set", "learning_rate=0")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    run: dict[str, Any] = json.loads((out / "run.json").read_text())
    returned: dict[str, np.ndarray] = {}
    for weights in run["weights"]:
        returned |= load_file(str(out / weights["file"]))
    _, shipped = read_delta(WEIGHTS_DIR / "reader-e5-small-ja-en")
    assert returned.keys() == shipped.keys()
    assert all(np.array_equal(returned[name], shipped[name]) for name in shipped)

    folder = unpack(out, tmp_path / "reader", log=lambda message: None)
    ours, theirs = (
        load_file(str(folder / "model.safetensors")),
        load_file(str(prepared / "model.safetensors")),
    )
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    # the device scored the model it built (word rows included) as kotae evaluate scores the reader here
    # (no span-edge table here: the run's learning_rate=0 does not validate as a training config)
    assert not (folder / "span_edges.json").exists()
    report = evaluate_folder(str(folder), str(shared_data / "jaquad" / "dev"), limit=10, device="cpu")
    assert {k: run["dev"]["jaquad-dev"][k] for k in ("exact_match", "f1", "n")} == {
        k: report.summary()[k] for k in ("exact_match", "f1", "n")
    }
    # other shipped weights in the tree than those packed against: refused, not trained from
    from kotae.reader_training.device.bundle import BundleError
    from kotae.reader_training.device.train import shipped_reader_tensors

    with pytest.raises(BundleError, match="pack again"):
        shipped_reader_tensors(manifest["base"]["delta"] | {"files": manifest["base"]["delta"]["files"][:1]})
    # a damaged weight file in the tree: refused as a bundle error (one line), not a traceback
    damaged = tmp_path / "weights" / "reader-e5-small-ja-en"
    shutil.copytree(WEIGHTS_DIR / "reader-e5-small-ja-en", damaged)
    with (damaged / "weights-3.safetensors").open("r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(reader_weights, "WEIGHTS_DIR", damaged.parent)
    with pytest.raises(BundleError, match="damaged"):
        shipped_reader_tensors(manifest["base"]["delta"])


@pytest.mark.slow
def test_a_variant_must_share_the_bundles_base(shared_data: Path, tmp_path: Path) -> None:
    from kotae.errors import KotaeError
    from kotae.reader_training.device.pack import pack

    data = f"[{{path: {shared_data / 'jaquad' / 'train'}, max_examples: 5}}]"
    variant = tmp_path / "reader.yaml"
    variant.write_text(
        f"base_model: reader-e5-small-ja-en\nfreeze_word_embeddings: true\ntrain_data: {data}\n"
    )
    overrides = ["base_model=multilingual-e5-small", "freeze_word_embeddings=true", f"train_data={data}"]
    with pytest.raises(KotaeError, match="a bundle holds one base"):
        pack(None, overrides, tmp_path / "bundle", log=lambda message: None, variants={"r": variant})

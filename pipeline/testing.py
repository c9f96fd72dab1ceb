"""Test helpers: a tiny indexed corpus (Japanese + English) with tiny models, built offline in seconds.

The embedder comes from :func:`kotae.indexing.testing.build_tiny_model`, the reader from
:mod:`kotae.reader_training.testing` (character-level for Japanese). Both are untrained, so answers are
arbitrary spans, but every part of the pipeline runs for real.

Example::

    setup = build_tiny_setup(tmp_path)
    config = setup.config("configs/pipeline/bm25.yaml")
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kotae.pipeline.config import PipelineConfig, load_pipeline_config

CORPUS: dict[str, str] = {
    "fuji.txt": (
        "富士山は日本で一番高い山です。高さは3776メートルです。\n"
        "山梨県と静岡県にまたがっています。2013年に世界文化遺産に登録されました。"
    ),
    "kyoto.md": "# 京都\n\n京都は794年に都になりました。古い寺や神社がたくさんあります。金閣寺は有名な寺です。",
    "tokyo.txt": "Tokyo is the capital of Japan. It became the capital in 1868. About 14 million people live there.",
    "rivers.txt": "The Shinano River is the longest river in Japan. It flows into the Sea of Japan at Niigata.",
}

QUESTIONS = ["富士山の高さは？", "What is the capital of Japan?", "京都はいつ都になりましたか？"]


@dataclass
class TinySetup:
    """Where the tiny models, corpus and index are, and the ``--set`` overrides that point a config at them."""

    root: Path
    embedder: Path
    reader: Path
    corpus: Path
    index_dir: Path
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def overrides(self) -> list[str]:
        return [
            f"embedder.model={json.dumps(str(self.embedder))}",
            f"reader.model={json.dumps(str(self.reader))}",
            f"index.dir={json.dumps(str(self.index_dir))}",
            "index.passage_tokens=24",
            "index.overlap_tokens=4",
            # The shipped configs read with runtime auto (int8 ONNX); an untrained tiny reader's answers
            # are near-ties that int8 may reorder, and each export costs seconds and a cache entry.
            # tests/test_reader_runtime.py covers the ONNX runtime on the tiny reader itself.
            "reader.runtime=torch",
        ]

    def config(self, path: str | Path | None = None, extra: list[str] | None = None) -> PipelineConfig:
        return load_pipeline_config(path, [*self.overrides, *(extra or [])])


def build_tiny_setup(root: Path, index: bool = True) -> TinySetup:
    """Write the corpus, a tiny embedder and a tiny reader under ``root``, and index the corpus."""
    from kotae.indexing.testing import build_tiny_model
    from kotae.reader_training.testing import tiny_reader, tiny_tokenizer

    root = Path(root)
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, text in CORPUS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    embedder = build_tiny_model(root / "embedder")
    tokenizer = tiny_tokenizer([*CORPUS.values(), *QUESTIONS])
    reader = root / "reader"
    tiny_reader(tokenizer).save_pretrained(reader)
    tokenizer.save_pretrained(reader)
    setup = TinySetup(root, embedder, reader, corpus, root / "index", dict(CORPUS))
    if index:
        from kotae.indexing.job import run_index

        run_index(setup.config(), [corpus])
    return setup


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedApp:
    """An ASGI app served by a real uvicorn in a background thread on a free port of 127.0.0.1.

    ``config`` builds the ``uvicorn.Config`` from ``(app, port)`` (default: uvicorn's own settings),
    so a test can serve with exactly what ``kotae serve`` uses::

        with ServedApp(create_app(config)) as served:
            httpx.get(served.url + "/health")
    """

    def __init__(self, app: Any, config: Callable[[Any, int], Any] | None = None) -> None:
        import uvicorn

        self.port = free_port()
        make = config or (lambda a, p: uvicorn.Config(a, host="127.0.0.1", port=p, log_level="critical"))
        self.server = uvicorn.Server(make(app, self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServedCommand:
    """``kotae serve ARGS --port PORT`` as its own process on a free port of 127.0.0.1, stopped on exit.

    The process gets one thread per math library and no ``KOTAE_API_KEY``; entering waits until
    ``/health`` answers 200 (or raises with the server's stderr when it exits or takes too long)::

        with ServedCommand(["--config", "configs/pipeline/bm25.yaml"]) as served:
            httpx.get(served.url + "/health")
    """

    def __init__(self, args: list[str], timeout: float = 240) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.timeout = timeout
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServedCommand:
        """Start the process (without waiting; :meth:`wait` waits)."""
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HAYSTACK_TELEMETRY_ENABLED": "False",
        }
        env.pop("KOTAE_API_KEY", None)
        command = [
            str(Path(sys.executable).with_name("kotae")),
            "serve",
            *self.args,
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        return self

    def wait(self) -> ServedCommand:
        """Wait until ``/health`` answers 200."""
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"kotae serve exited: {self.process.stderr.read() if self.process.stderr else ''}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"kotae serve did not answer /health within {self.timeout:.0f} s")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def __enter__(self) -> ServedCommand:
        try:
            return self.start().wait()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Test helper: a real Milvus Lite gRPC server on 127.0.0.1, started and stopped by the caller.

``python -m milvus_lite server`` serves several processes over ``http://127.0.0.1:PORT`` as a
Milvus cluster does, so kotae's Milvus store is tested the way a deployment uses it. Usage::

    with milvus_lite_server(tmp_path / "milvus") as server:
        store = MilvusDocumentStore(tmp_path / "index", uri=server.uri)
        server.kill()      # kill -9, as a crash would
        server.start()     # the same data folder and port again
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MilvusLiteServer:
    """One ``python -m milvus_lite server`` process over ``data_dir``, on ``port``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115 - the server's
        command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"milvus_lite server exited with {self.process.returncode}; see {log.name}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"milvus_lite server did not listen on port {self.port} within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def milvus_lite_server(data_dir: Path, port: int | None = None) -> Iterator[MilvusLiteServer]:
    """A started :class:`MilvusLiteServer`, stopped on exit."""
    server = MilvusLiteServer(data_dir, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()

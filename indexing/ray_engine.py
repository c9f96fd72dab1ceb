"""The Ray engine: passages and vectors computed by a pool of Ray actors, on one machine or a cluster.

The driver (``kotae index``) still reads the corpus, diffs it against the store and commits; this
engine only receives the texts of the changed documents. They travel **as data from the driver**
(``ray.data.from_items``), longest first so a batch holds texts of similar length, through
``map_batches`` on an ``ActorPoolStrategy`` pool: each actor loads the embedder once, then splits
and embeds whole batches of documents with :func:`indexing.engine.split_and_embed`, the function the
local engine runs. Each result row is one document: its passage offsets and its vectors (float32
bytes); the passage texts are cut from the driver's own copy of the document. Workers therefore
need no access to the corpus files, only to the embedder's model folder at the same path.

With no address (``address`` or ``RAY_ADDRESS``) Ray starts on this machine for the run (``address="local"``, never silently joining
a running cluster) and shuts down afterwards; with an address (``auto``, ``host:port``, or
``ray://host:10001`` with ``ray[client]``) it joins that cluster and leaves it running. A Ray that
the caller already initialised is used as it is.

Actors ask for ``cpus_per_worker`` CPUs (default 0.5): a whole CPU per actor on a small machine
deadlocks Ray Data when the upstream read runs as a task, so a stall is also made to fail after
``RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S`` (default here 900 s) rather than after 30 minutes.
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np

from indexing.engine import Computed, SplitSettings, split_and_embed
from indexing.split import Passage
from kotae.errors import KotaeError

#: Quiet and private defaults, applied (unless already set) before Ray is imported.
RAY_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_LOG_LEVEL": "ERROR",
    "RAY_BACKEND_LOG_LEVEL": "fatal",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "900",
}


def import_ray() -> Any:
    """``ray`` and ``ray.data``, or one line saying how to install them."""
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    try:
        import ray
        import ray.data  # the [data] extra
    except ImportError:
        raise KotaeError("the Ray engine needs Ray: pip install 'kotae[ray]'") from None
    return ray


def check_address(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a ``host:port`` address (Ray itself keeps
    retrying); ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise KotaeError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); "
            "start one with 'ray start --head' or fix --ray-address / RAY_ADDRESS"
        ) from None


class _Worker:
    """One Ray actor: loads the embedder once, then splits and embeds batches of documents."""

    def __init__(self, embedder: Any, settings: SplitSettings, threads: int) -> None:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch ships with kotae
            pass
        self.embedder = embedder
        self.settings = settings

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        positions = batch.column("position").to_pylist()
        texts = batch.column("text").to_pylist()
        rows: dict[int, tuple[list[int], list[int], bytes]] = {}
        for i, passages, vectors in split_and_embed(self.embedder, texts, self.settings):
            rows[i] = (
                [p.start for p in passages],
                [p.end for p in passages],
                np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
            )
        order = range(len(texts))
        return pa.table(
            {
                "position": pa.array(positions, pa.int64()),
                "starts": pa.array([rows[i][0] for i in order], pa.list_(pa.int64())),
                "ends": pa.array([rows[i][1] for i in order], pa.list_(pa.int64())),
                "vectors": pa.array([rows[i][2] for i in order], pa.binary()),
            }
        )


class RayEngine:
    """Split and embed on a pool of ``workers`` Ray actors, ``batch_documents`` documents per call."""

    def __init__(
        self,
        embedder: Any,
        address: str | None = None,
        workers: int = 2,
        batch_documents: int = 64,
        cpus_per_worker: float = 0.5,
        gpus_per_worker: float = 0.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, but got {workers}")
        if batch_documents < 1:
            raise ValueError(f"batch_documents must be at least 1, but got {batch_documents}")
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be greater than 0, but got {cpus_per_worker}")
        self.embedder = embedder
        self.address = address
        self.workers = workers
        self.batch_documents = batch_documents
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker

    def _worker_embedder(self) -> Any:
        """The embedder the actors receive: never a loaded model, and on the GPU when they have one."""
        embedder = copy.copy(self.embedder)
        if self.gpus_per_worker > 0 and getattr(embedder, "device", "") is None:
            embedder.device = "cuda"
        return embedder

    def run(self, texts: list[str], settings: SplitSettings) -> Iterator[Computed]:
        if not texts:
            return
        ray = import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        started_here = False
        if not ray.is_initialized():
            if address:
                check_address(address)
            try:
                ray.init(
                    address=address or "local",
                    include_dashboard=False if not address else None,
                    log_to_driver=False,
                    logging_level="ERROR",
                )
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = address or "this machine"
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise KotaeError(f"could not start or reach Ray at {where}: {first}") from None
            started_here = True
        try:
            yield from self._run(ray, texts, settings)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, texts: list[str], settings: SplitSettings) -> Iterator[Computed]:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        # One block per batch (up to a bound), so every actor of the pool gets work from the start.
        blocks = min(-(-len(texts) // self.batch_documents), 4096)
        dataset = ray.data.from_items(
            [{"position": i, "text": texts[i]} for i in order], override_num_blocks=blocks
        )
        results = dataset.map_batches(
            _Worker,
            fn_constructor_args=(self._worker_embedder(), settings, max(1, round(self.cpus_per_worker))),
            batch_size=self.batch_documents,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=min(self.workers, blocks)),
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker or None,
        )
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    position, text = row["position"], texts[row["position"]]
                    passages = [
                        Passage(text=text[start:end], start=start, end=end, index=k)
                        for k, (start, end) in enumerate(zip(row["starts"], row["ends"], strict=True))
                    ]
                    vectors = np.frombuffer(row["vectors"], dtype=np.float32)
                    yield position, passages, vectors.reshape(len(passages), -1) if passages else vectors
        except ray.exceptions.RayError as error:
            first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise KotaeError(f"the Ray engine failed: {first}") from None

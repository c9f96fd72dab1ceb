"""The Ray engine: passages and vectors computed by a pool of Ray actors, on one machine or a cluster.

The driver (``kotae index``) still reads the corpus, diffs it against the store and commits; this
engine only receives the changed documents. They reach the workers in one of two ways
(``--ray-input``):

- ``data`` (default): the driver sends their texts (``ray.data.from_items``), longest first so a
  batch holds texts of similar length. Workers need no access to the corpus files.
- ``paths``: for a cluster with shared storage, the driver sends only file paths and document ids,
  grouped by file; each worker reads its files itself with :func:`kotae.indexing.readers.read_file` (the
  driver's reader, same cleaning, same ids) and keeps the documents it was asked for. A worker that
  cannot read a file, or reads a text whose hash differs from the driver's (the file changed during
  the run), fails the run in one line; what was committed before stays.

Either way the rows go through ``map_batches`` on an ``ActorPoolStrategy`` pool: each actor loads
the embedder once, then splits and embeds whole batches of documents with
:func:`kotae.indexing.compute.split_and_embed`, the function the local engine runs. Each result row is one
document: its passage offsets and its vectors (float32 bytes); the passage texts are cut from the
driver's own copy of the document. Workers need the embedder's model folder at the same path.

With no address (``address`` or ``RAY_ADDRESS``) Ray starts on this machine for the run
(``address="local"``, never silently joining a running cluster) and shuts down afterwards; with an
address (``auto``, ``host:port``, or ``ray://host:10001`` with ``ray[client]``) it joins that
cluster and only disconnects from it. Ray Data cannot run in a Ray Client driver, so with
``ray://`` the pipeline runs in a small coordinator actor on the cluster and the driver pulls its
results. A Ray that the caller already initialised is used as it is.

Actors ask for ``cpus_per_worker`` CPUs (default 0.5): a whole CPU per actor on a small machine
deadlocks Ray Data when the upstream read runs as a task, so a stall is also made to fail after
``RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S`` (default here 900 s) rather than after 30 minutes.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kotae.errors import KotaeError
from kotae.indexing.compute import Computed, SplitSettings, split_and_embed
from kotae.indexing.readers import DEFAULT_MAX_CHARS, ReadReport, SourceDocument, read_file
from kotae.indexing.split import Passage

#: How documents reach the workers: their texts from the driver, or paths the workers read.
RAY_INPUTS = ("data", "paths")

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
    """Fail in seconds, not minutes, when nothing listens at a ``host:port`` or ``ray://host:port``
    address (Ray itself keeps retrying); ``auto`` is left to Ray."""
    client = address.startswith("ray://")
    if client:
        try:
            import grpc  # noqa: F401 - what ray[client] adds
        except ImportError:
            raise KotaeError(
                f"--ray-address {address} needs Ray Client: pip install 'kotae[ray]' (ray[client])"
            ) from None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or "://" in host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        start = "ray start --head --ray-client-server-port=10001" if client else "ray start --head"
        raise KotaeError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); "
            f"start one with '{start}' or fix --ray-address / RAY_ADDRESS"
        ) from None


def text_digest(text: str) -> str:
    """What a worker and the driver compare to know they read the same document text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _result_table(
    positions: list[int],
    results: dict[int, tuple[list[Passage], np.ndarray]],
    extra: dict[str, list[str]] | None = None,
) -> Any:
    """One row per document: its position, passage offsets and float32 vectors (plus ``extra`` columns)."""
    import pyarrow as pa

    empty: tuple[list[Passage], np.ndarray] = ([], np.zeros(0, dtype=np.float32))
    rows = [results.get(i, empty) for i in range(len(positions))]
    columns = {
        "position": pa.array(positions, pa.int64()),
        "starts": pa.array([[p.start for p in passages] for passages, _ in rows], pa.list_(pa.int64())),
        "ends": pa.array([[p.end for p in passages] for passages, _ in rows], pa.list_(pa.int64())),
        "vectors": pa.array(
            [np.ascontiguousarray(vectors, dtype=np.float32).tobytes() for _, vectors in rows], pa.binary()
        ),
    }
    for name, values in (extra or {}).items():
        columns[name] = pa.array(values, pa.string())
    return pa.table(columns)


class _Worker:
    """One Ray actor: loads the embedder once, then splits and embeds batches of documents sent as text."""

    def __init__(self, embedder: Any, settings: SplitSettings, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.embedder = embedder
        self.settings = settings

    def embed(self, texts: list[str]) -> dict[int, tuple[list[Passage], np.ndarray]]:
        return {
            i: (passages, vectors)
            for i, passages, vectors in split_and_embed(self.embedder, texts, self.settings)
        }

    def __call__(self, batch: Any) -> Any:
        positions = batch.column("position").to_pylist()
        return _result_table(positions, self.embed(batch.column("text").to_pylist()))


class _PathWorker(_Worker):
    """One Ray actor for ``--ray-input paths``: reads the files of its batch itself (each once), keeps
    the documents it was asked for, and reports for each one the hash of the text it embedded, or
    why it could not read it."""

    def __init__(self, embedder: Any, settings: SplitSettings, threads: int, max_chars: int) -> None:
        super().__init__(embedder, settings, threads)
        self.max_chars = max_chars

    def read(self, source: str) -> tuple[dict[str, str], str]:
        """The texts of the documents in ``source`` by id, and a reason when the file gave none."""
        report = ReadReport()
        texts = {document.id: document.text for document in read_file(Path(source), report, self.max_chars)}
        reasons = [problem.reason for problem in report.skipped if problem.source == source]
        return texts, (reasons[0] if reasons else "")

    def __call__(self, batch: Any) -> Any:
        positions: list[int] = []
        texts: list[str] = []
        digests: list[str] = []
        errors: list[str] = []
        files: dict[str, tuple[dict[str, str], str]] = {}
        rows = zip(
            batch.column("positions").to_pylist(),
            batch.column("ids").to_pylist(),
            batch.column("sources").to_pylist(),
            strict=True,
        )
        for row in rows:
            for position, document_id, source in zip(*row, strict=True):
                if source not in files:
                    files[source] = self.read(source)
                found, reason = files[source]
                text = found.get(document_id)
                positions.append(position)
                texts.append("" if text is None else text)
                digests.append("" if text is None else text_digest(text))
                errors.append("" if text is not None else reason or "no such document in the file")
        wanted = [i for i, error in enumerate(errors) if not error]
        embedded = self.embed([texts[i] for i in wanted])
        results = {wanted[k]: value for k, value in embedded.items()}
        return _result_table(positions, results, {"digest": digests, "error": errors})


@dataclass
class _Plan:
    """One Ray Data job: input rows, the actor class and its arguments, batch and pool sizes."""

    rows: list[dict[str, Any]]
    worker: type
    worker_args: tuple[Any, ...]
    batch_size: int
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    environment: dict[str, str] = field(default_factory=dict)


def _execute(plan: _Plan) -> Iterator[Any]:
    """Run ``plan`` with Ray Data in this process (a Ray driver or a Ray worker): result tables."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    for key, value in plan.environment.items():
        os.environ.setdefault(key, value)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # One block per batch (up to a bound), so every actor of the pool gets work from the start.
    blocks = min(-(-len(plan.rows) // plan.batch_size), 4096)
    dataset = ray.data.from_items(plan.rows, override_num_blocks=blocks)
    results = dataset.map_batches(
        plan.worker,
        fn_constructor_args=plan.worker_args,
        batch_size=plan.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=min(plan.workers, blocks)),
        num_cpus=plan.cpus_per_worker,
        num_gpus=plan.gpus_per_worker or None,
    )
    yield from results.iter_batches(batch_size=None, batch_format="pyarrow")


class _Coordinator:
    """Runs a plan on the cluster for a Ray Client driver (Ray Data cannot run in one), which pulls
    the result tables one at a time."""

    def __init__(self, plan: _Plan) -> None:
        self.tables = _execute(plan)

    def next(self) -> Any:
        return next(self.tables, None)


def _client_tables(ray: Any, plan: _Plan) -> Iterator[Any]:
    coordinator = ray.remote(num_cpus=0)(_Coordinator).remote(plan)
    try:
        while (table := ray.get(coordinator.next.remote())) is not None:
            yield table
    finally:
        ray.kill(coordinator)


CLIENT_SERVER_FAILED = "Starting Ray client server failed"
"""What a Ray Client connection says when the cluster's proxy could not start the server process it
starts for each client. Seen twice in about five full test-suite runs on a loaded 2-core CI machine
(never in seven runs of the Ray tests alone); the cause was not found, and a second connection gets a
fresh server process, so :func:`connect_ray` tries once more."""


def connect_ray(ray: Any, address: str | None) -> None:
    """``ray.init`` on ``address`` (a new local Ray when None), quiet; a failure is one line
    (:class:`KotaeError`) naming the address. A Ray Client whose server process failed to start
    (:data:`CLIENT_SERVER_FAILED`) is tried a second time."""
    for attempt in (1, 2):
        try:
            ray.init(
                address=address or "local",
                include_dashboard=False if not address else None,
                log_to_driver=False,
                logging_level="ERROR",
            )
            return
        except (ConnectionError, RuntimeError, ValueError) as error:
            if attempt == 1 and CLIENT_SERVER_FAILED in str(error):
                print(f"Ray Client at {address}: {CLIENT_SERVER_FAILED}; connecting again", file=sys.stderr)
                continue
            where = address or "this machine"
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            # A Ray Client failure is a heading plus the server's traceback: keep its last line.
            said = ": ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else type(error).__name__
            raise KotaeError(f"could not start or reach Ray at {where}: {said}") from None


class RayEngine:
    """Split and embed on a pool of ``workers`` Ray actors, ``batch_documents`` documents per call;
    documents reach them as ``input`` (``data`` or ``paths``)."""

    def __init__(
        self,
        embedder: Any,
        address: str | None = None,
        workers: int = 2,
        batch_documents: int = 64,
        cpus_per_worker: float = 0.5,
        gpus_per_worker: float = 0.0,
        input: str = "data",
        max_document_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, but got {workers}")
        if batch_documents < 1:
            raise ValueError(f"batch_documents must be at least 1, but got {batch_documents}")
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be greater than 0, but got {cpus_per_worker}")
        if input not in RAY_INPUTS:
            raise ValueError(f"input must be data or paths, but got {input!r}")
        self.embedder = embedder
        self.address = address
        self.workers = workers
        self.batch_documents = batch_documents
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.input = input
        self.max_document_chars = max_document_chars

    def _worker_embedder(self) -> Any:
        """The embedder the actors receive: never a loaded model, and on the GPU when they have one."""
        embedder = copy.copy(self.embedder)
        if self.gpus_per_worker > 0 and getattr(embedder, "device", "") is None:
            embedder.device = "cuda"
        return embedder

    def plan(self, documents: Sequence[SourceDocument], settings: SplitSettings) -> _Plan:
        """The Ray Data job for ``documents``: their texts, or their paths grouped by file."""
        args: tuple[Any, ...] = (self._worker_embedder(), settings, max(1, round(self.cpus_per_worker)))
        rows: list[dict[str, Any]] = []
        if self.input == "data":
            order = sorted(range(len(documents)), key=lambda i: len(documents[i].text), reverse=True)
            rows = [{"position": i, "text": documents[i].text} for i in order]
            worker: type = _Worker
            batch_size = self.batch_documents
        else:
            # A row is up to batch_documents documents of one or more files, in file order, so a file
            # is read by as few workers as possible; each actor call takes one row.
            order = sorted(range(len(documents)), key=lambda i: (documents[i].source, i))
            for start in range(0, len(order), self.batch_documents):
                chunk = order[start : start + self.batch_documents]
                rows.append(
                    {
                        "positions": chunk,
                        "ids": [documents[i].id for i in chunk],
                        "sources": [documents[i].source for i in chunk],
                    }
                )
            worker, batch_size, args = _PathWorker, 1, (*args, self.max_document_chars)
        return _Plan(
            rows,
            worker,
            args,
            batch_size,
            self.workers,
            self.cpus_per_worker,
            self.gpus_per_worker,
            {key: os.environ.get(key, value) for key, value in RAY_ENVIRONMENT.items()},
        )

    def run(self, documents: Sequence[SourceDocument], settings: SplitSettings) -> Iterator[Computed]:
        if not documents:
            return
        ray = import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        started_here = False
        if not ray.is_initialized():
            if address:
                check_address(address)
            connect_ray(ray, address)
            started_here = True
        try:
            # With no address this stops the Ray started above; joined to a cluster (a driver or a
            # Ray Client) it only disconnects, and the cluster keeps running.
            yield from self._run(ray, documents, settings)
        finally:
            if started_here:
                ray.shutdown()

    def _run(
        self, ray: Any, documents: Sequence[SourceDocument], settings: SplitSettings
    ) -> Iterator[Computed]:
        from ray.util.client import ray as client

        plan = self.plan(documents, settings)
        tables = _client_tables(ray, plan) if client.is_connected() else _execute(plan)
        try:
            for table in tables:
                for row in table.to_pylist():
                    yield computed(row, documents)
        except ray.exceptions.RayError as error:
            first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise KotaeError(f"the Ray engine failed: {first}") from None


def computed(row: dict[str, Any], documents: Sequence[SourceDocument]) -> Computed:
    """A worker's result row as ``(position, passages, vectors)``, passage texts cut from the driver's
    copy; a row from a worker that could not read the document, or read another text, fails the run."""
    position = row["position"]
    document = documents[position]
    if row.get("error"):
        raise KotaeError(
            f"--ray-input paths: a Ray worker could not read {document.id} ({row['error']}); workers "
            "need the corpus at the same path (shared storage), or use --ray-input data"
        )
    if "digest" in row and row["digest"] != text_digest(document.text):
        raise KotaeError(
            f"{document.id} changed while it was being indexed (a Ray worker read another text); "
            "run kotae index again"
        )
    text = document.text
    passages = [
        Passage(text=text[start:end], start=start, end=end, index=k)
        for k, (start, end) in enumerate(zip(row["starts"], row["ends"], strict=True))
    ]
    vectors = np.frombuffer(row["vectors"], dtype=np.float32)
    return position, passages, vectors.reshape(len(passages), -1) if passages else vectors

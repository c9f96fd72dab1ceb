"""Load test: many concurrent clients against a real ``kotae serve`` on 127.0.0.1, for a bounded time.

Starts ``kotae serve`` as a subprocess over a small indexed corpus (``examples/`` by default,
indexed into a temporary folder), waits for ``/health``, then runs ``--clients`` asyncio clients
(httpx) that ask a seeded mix of the Japanese and English questions in
``examples/questions.json`` until ``--duration`` seconds have passed. Warm-up is not measured:
it lasts ``--warmup`` seconds and until every client has had an answer (the models have seen real
requests). Reports throughput, latency p50/p95/p99, errors (goal 0) and the
server's resident memory after warm-up and at the end (goal: under 10 % growth), then stops the
server. Everything is bounded: it ends by itself after warm-up + duration + a grace period.

    .venv/bin/python bench/bench_load.py                       # default config (needs its models prepared)
    .venv/bin/python bench/bench_load.py --tiny                # tiny offline models: HTTP + pipeline overhead
    .venv/bin/python bench/bench_load.py --set reader.model=runs/jaquad-small --duration 60 --clients 32

Prints one JSON object; ``--output FILE.md`` also writes a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KOTAE = Path(sys.executable).with_name("kotae")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_questions(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [item["question"] for language in ("ja", "en") for item in data.get(language, [])]


def prepare(args: argparse.Namespace, work: Path) -> list[str]:
    """The ``kotae serve`` options: config overrides and an index over the corpus."""
    options: list[str] = []
    if args.config:
        options += ["--config", str(args.config)]
    overrides = list(args.set or [])
    if args.tiny:
        from kotae.pipeline.testing import build_tiny_setup

        setup = build_tiny_setup(work / "tiny", index=False)
        overrides += setup.overrides
    index_dir = args.index_dir or work / "index"
    overrides.append(f"index.dir={json.dumps(str(index_dir))}")
    if not (Path(index_dir) / "store.sqlite3").exists():
        command = [str(KOTAE), "index", "--index-dir", str(index_dir), "--corpus", *map(str, args.corpus)]
        command += [*(["--config", str(args.config)] if args.config else [])]
        for override in overrides:
            command += ["--set", override]
        print(f"indexing {', '.join(map(str, args.corpus))} ...", file=sys.stderr)
        subprocess.run(command, check=True, timeout=1800, stdout=subprocess.DEVNULL)
    for override in overrides:
        options += ["--set", override]
    if args.max_batch is not None:
        options += ["--max-batch", str(args.max_batch)]
    return options


async def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"kotae serve exited with {process.returncode}; see its log")
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"kotae serve was not healthy within {timeout:.0f} s")


async def run_clients(
    url: str,
    questions: list[str],
    clients: int,
    warmup: float,
    duration: float,
    top_k: int,
    seed: int,
    pid: int,
) -> dict[str, Any]:
    """Warm-up lasts ``warmup`` seconds and until every client has had an answer; then ``duration`` s."""
    import httpx
    import psutil

    server = psutil.Process(pid)
    rss_before_warmup = server.memory_info().rss
    started = time.monotonic()
    warmed = asyncio.Event()
    answered: set[int] = set()
    window = {"from": float("inf"), "stop": float("inf")}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    languages = {"ja": 0, "en": 0}
    rss: dict[str, int] = {}

    def check_warm() -> None:
        if not warmed.is_set() and len(answered) == clients and time.monotonic() - started >= warmup:
            window["from"] = time.monotonic()
            window["stop"] = window["from"] + duration
            rss["start"] = server.memory_info().rss
            warmed.set()

    async def sample_rss_after_warmup() -> None:
        while not warmed.is_set():
            check_warm()
            await asyncio.sleep(0.2)

    async def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0), limits=limits) as http:
            while time.monotonic() < window["stop"]:
                question = rng.choice(questions)
                sent = time.monotonic()
                try:
                    response = await http.post("/ask", json={"question": question, "top_k": top_k})
                    kind = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
                    kind = type(error).__name__
                elapsed = time.monotonic() - sent
                answered.add(number)
                check_warm()
                if sent < window["from"]:
                    continue  # warm-up
                if kind is None:
                    latencies.append(elapsed)
                    languages["en" if question.isascii() else "ja"] += 1
                else:
                    errors[kind] = errors.get(kind, 0) + 1

    await asyncio.gather(sample_rss_after_warmup(), *(client(n) for n in range(clients)))
    finished = time.monotonic()
    rss["end"] = server.memory_info().rss
    measured = max(finished - window["from"], 1e-9)  # includes draining the last requests
    start_mb, end_mb = rss.get("start", rss_before_warmup) / 2**20, rss["end"] / 2**20
    return {
        "clients": clients,
        "warmup_s": round(window["from"] - started, 1),
        "duration_s": round(measured, 1),
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "answered_ja": languages["ja"],
        "answered_en": languages["en"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": round(len(latencies) / measured, 2),
        "latency_s": {
            "p50": round(percentile(latencies, 50), 3),
            "p95": round(percentile(latencies, 95), 3),
            "p99": round(percentile(latencies, 99), 3),
            "max": round(max(latencies, default=float("nan")), 3),
        },
        "server_rss_mb": {
            "before_warmup": round(rss_before_warmup / 2**20, 1),
            "after_warmup": round(start_mb, 1),
            "end": round(end_mb, 1),
            "growth_pct": round(100 * (end_mb - start_mb) / start_mb, 1),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    latency, rss = result["latency_s"], result["server_rss_mb"]
    return "\n".join(
        [
            "| clients | measured s | requests | errors | req/s | p50 s | p95 s | p99 s | RSS after warm-up → end (MiB) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {result['clients']} | {result['duration_s']} | {result['ok']} | {result['errors']} | "
            f"{result['throughput_rps']} | {latency['p50']} | {latency['p95']} | {latency['p99']} | "
            f"{rss['after_warmup']} → {rss['end']} ({rss['growth_pct']:+} %) |",
            "",
            f"Setup: {result['setup']}",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (after warm-up)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds not measured (and until all clients had an answer)"
    )
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", action="append", help="config override for kotae index/serve; repeatable")
    parser.add_argument("--index-dir", type=Path, help="an existing index (default: index the corpus afresh)")
    parser.add_argument("--max-batch", type=int, help="kotae serve --max-batch (1: one question at a time)")
    parser.add_argument("--corpus", type=Path, nargs="+", default=[ROOT / "examples"])
    parser.add_argument("--questions", type=Path, default=ROOT / "examples" / "questions.json")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny untrained offline models (fast, no downloads)"
    )
    parser.add_argument("--output", type=Path, help="also write a Markdown summary here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1024 or not 0 < args.duration <= 600:
        parser.error("--clients must be 1-1024 and --duration at most 600 s")

    with tempfile.TemporaryDirectory(prefix="kotae-load-") as folder:
        work = Path(folder)
        options = prepare(args, work)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (work / "serve.log").open("wb")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        server = subprocess.Popen(
            [str(KOTAE), "serve", "--host", "127.0.0.1", "--port", str(port), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            asyncio.run(wait_healthy(url, server, timeout=600))
            budget = args.warmup + args.duration + 300  # a slow warm-up and draining the last requests
            result = asyncio.run(
                asyncio.wait_for(
                    run_clients(
                        url,
                        load_questions(args.questions),
                        args.clients,
                        args.warmup,
                        args.duration,
                        args.top_k,
                        args.seed,
                        server.pid,
                    ),
                    timeout=budget,
                )
            )
        except BaseException:
            log.flush()
            sys.stderr.write((work / "serve.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    result["setup"] = (
        f"{'tiny models' if args.tiny else 'config ' + str(args.config or 'default')}"
        f"{' ' + ' '.join(args.set) if args.set else ''}"
        f"{f'; serve --max-batch {args.max_batch}' if args.max_batch is not None else ''}; corpus {', '.join(p.name for p in args.corpus)}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}"
    )
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.output:
        args.output.write_text(markdown(result) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()

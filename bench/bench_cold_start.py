"""Cold start of ``kotae ask``: a fresh process per question, per config, in-process and via ``--server``.

For each ``--config`` it indexes ``examples/`` into a temporary folder (or uses ``--index-dir
DIR/<config>``), then runs ``kotae ask --config C --index-dir D QUESTION`` ``--repeat`` times in a
fresh process and reports the median wall time and the median CPU time (user + system) of the
child. With ``--server`` it also starts one ``kotae serve`` on the same index and times
``kotae ask --server auto`` (the served answer; no model loaded by the asking process). The file
cache is warm (it cannot be dropped here); on a shared machine CPU time is the steadier figure.

    .venv/bin/python bench/bench_cold_start.py --config default --config bm25 --server
    .venv/bin/python bench/bench_cold_start.py --kotae /other/checkout/.venv/bin/kotae   # another build

Prints one JSON object per line and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Who did Martin Luther marry?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and child CPU seconds (user + system) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ensure_index(kotae: str, config: str, index_dir: Path, env: dict[str, str]) -> None:
    if (index_dir / "store.sqlite3").exists():
        return
    print(f"indexing examples/ for {config} ...", file=sys.stderr)
    command = [kotae, "index", "--config", config, "--index-dir", str(index_dir)]
    command += ["--corpus", str(ROOT / "examples" / "ja"), str(ROOT / "examples" / "en")]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, timeout=3600)


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kotae serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("kotae serve did not become healthy")


def measure(
    kotae: str, config: str, index_dir: Path, args: argparse.Namespace, env: dict[str, str]
) -> list[dict[str, Any]]:
    ask = [kotae, "ask", "--config", config, "--index-dir", str(index_dir), QUESTION]
    modes: list[tuple[str, list[str]]] = [("in-process", ask)]
    server = None
    if args.server:
        port = free_port()
        server = subprocess.Popen(
            [kotae, "serve", "--config", config, "--index-dir", str(index_dir), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(f"http://127.0.0.1:{port}", server)
        modes.append(("--server auto", [*ask[:2], "--server", "auto", *ask[2:]]))
    rows = []
    try:
        for mode, command in modes:
            runs = [timed(command, env) for _ in range(args.repeat)]
            rows.append(
                {
                    "config": config,
                    "mode": mode,
                    "runs": args.repeat,
                    "wall_s": round(statistics.median(w for w, _ in runs), 2),
                    "cpu_s": round(statistics.median(c for _, c in runs), 2),
                    "kotae": kotae,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", action="append", help="shipped config name or YAML (repeatable; default: default, bm25)"
    )
    parser.add_argument(
        "--kotae", default=str(Path(sys.executable).with_name("kotae")), help="the kotae executable to time"
    )
    parser.add_argument(
        "--index-dir", type=Path, help="folder holding one index per config (default: a temporary one)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--server",
        action="store_true",
        help="also time kotae ask --server auto against a running kotae serve",
    )
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}
    with tempfile.TemporaryDirectory(prefix="kotae-cold-") as temporary:
        root = args.index_dir or Path(temporary)
        rows = []
        for config in args.config or ["default", "bm25"]:
            index_dir = root / Path(config).stem
            ensure_index(args.kotae, config, index_dir, env)
            rows += measure(args.kotae, config, index_dir, args, env)
    load = os.getloadavg()[0]
    print(f"\n| config | mode | wall s (median of {args.repeat}) | CPU s | load avg |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['mode']} | {row['wall_s']} | {row['cpu_s']} | {load:.1f} |")


if __name__ == "__main__":
    main()

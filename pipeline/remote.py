"""``kotae ask --server``: ask a running ``kotae serve`` instead of loading the models again.

A ``kotae serve`` writes ``serve.json`` into the index folder while it runs (:func:`write_record`):
where it listens (a loopback URL), its process id, a digest of its pipeline config and whether it
needs an API key (never the key itself). ``kotae ask --server auto`` reads that record
(:func:`recorded_server`) and uses the server only when it is alive, answers ``/health`` and serves
the same config; otherwise the question is answered in-process as usual. ``--server URL`` always
asks that server. The server's guards apply as to any client: a keyed server needs ``--api-key``
(or ``KOTAE_API_KEY``), and only its own host names are answered.

Only the standard library is used here, so asking a server never imports torch, transformers or
Haystack.

Example::

    records = ask_server("http://127.0.0.1:8000", "富士山の高さは？", top_k=3)["answers"]
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kotae.errors import KotaeError

RECORD_FILE = "serve.json"
"""The running server's record, in the index folder it serves."""

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Straight to the server: a proxy from the environment never sees questions or the key."""


def config_digest(config: Any) -> str:
    """A digest of a pipeline config (a pydantic model): equal configs, equal digests."""
    dumped = json.dumps(config.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(dumped.encode()).hexdigest()


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``: a wildcard bind
    (``0.0.0.0``, ``::``) is reached over loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_record(index_dir: Path, url: str, digest: str, key_required: bool) -> Path | None:
    """Write ``serve.json`` for this process into ``index_dir``; None when the folder is not writable."""
    record = {"url": url, "pid": os.getpid(), "config": digest, "api_key_required": key_required}
    path = Path(index_dir) / RECORD_FILE
    try:
        temporary = path.with_name(f".{RECORD_FILE}.{os.getpid()}")
        temporary.write_text(json.dumps(record), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        return None
    return path


def remove_record(path: Path | None) -> None:
    """Remove the record this process wrote (not one a newer server wrote over it)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def recorded_server(index_dir: Path, digest: str, timeout: float = 2.0) -> str | None:
    """The URL of a live ``kotae serve`` recorded in ``index_dir`` that serves the config ``digest``, else None."""
    try:
        record = json.loads((Path(index_dir) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = record.get("url") if isinstance(record, dict) else None
    if not isinstance(url, str) or record.get("config") != digest or not _alive(record.get("pid")):
        return None
    try:
        with _DIRECT.open(url.rstrip("/") + "/health", timeout=timeout) as response:
            return url if response.status == 200 else None
    except (OSError, ValueError):
        return None


def ask_server(
    url: str, question: str, top_k: int | None = None, api_key: str | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """``POST /ask`` to the server at ``url``: ``{"question", "answers", "seconds"}``, each answer as
    ``kotae ask --json`` prints it.

    :raises KotaeError: One line when the server cannot be reached, wants a key, or refuses the question.
    """
    body = json.dumps({"question": question, **({"top_k": top_k} if top_k is not None else {})}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    request = urllib.request.Request(url.rstrip("/") + "/ask", data=body, headers=headers, method="POST")
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        raise KotaeError(_refusal(url, error)) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise KotaeError(
            f"no kotae serve answers at {url} ({reason}); start one (kotae serve) or ask without --server"
        ) from None


def _refusal(url: str, error: urllib.error.HTTPError) -> str:
    """One line for a server's refusal, with its own ``error`` line when it sent one."""
    try:
        message = str(json.loads(error.read()).get("error", ""))
    except (OSError, ValueError, AttributeError):
        message = ""
    if error.code == 401:
        return f"the kotae serve at {url} needs its API key: pass --api-key KEY or set KOTAE_API_KEY"
    return f"the kotae serve at {url} answered HTTP {error.code}: {message or error.reason}"

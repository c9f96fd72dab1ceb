"""The store's vector file: a serialised FAISS index behind a header that says which commit it reflects.

Layout: ``KOTAEFX2`` (8 bytes), the commit generation (8 bytes, little-endian), a staging flag
(1 byte), the CRC-32 of the payload (4 bytes), then the payload. A file of another format, cut short
or with a wrong checksum reads as None and the store rebuilds it from SQLite. Files are written
under a temporary name (``NAME.<random>.<pid>.tmp``), synced and renamed into place;
:func:`remove_stale_temporaries` deletes what killed writers left behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VectorFile", "read_vector_file", "remove_stale_temporaries", "write_vector_file"]

MAGIC = b"KOTAEFX2"
HEADER = len(MAGIC) + 13  # magic, generation (8 bytes), staging flag (1 byte), CRC-32 of the rest (4)


@dataclass(frozen=True)
class VectorFile:
    """A vector file's contents: the generation it reflects, whether the index is staging, the payload."""

    generation: int
    staging: bool
    payload: bytes


def read_vector_file(path: Path) -> VectorFile | None:
    """The file's contents, or None when it is missing, of another format, or damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER or not data.startswith(MAGIC):
        return None  # an older format, or damaged: rebuilt from SQLite
    generation = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    checksum = int.from_bytes(data[len(MAGIC) + 9 : HEADER], "little")
    if zlib.crc32(data[HEADER:]) != checksum:
        return None  # damaged (or cut short): never searched, rebuilt from SQLite
    return VectorFile(generation, bool(data[len(MAGIC) + 8]), data[HEADER:])


def write_vector_file(target: Path, contents: VectorFile) -> None:
    """Write ``contents`` to a temporary file beside ``target``, sync it, and atomically replace ``target``."""
    header = (
        MAGIC
        + int(contents.generation).to_bytes(8, "little")
        + bytes([int(contents.staging)])
        + zlib.crc32(contents.payload).to_bytes(4, "little")
    )
    # unique per writer, also between store objects of one process; the pid stays second to last
    temporary = target.parent / f"{target.name}.{uuid.uuid4().hex[:12]}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(header)
        handle.write(contents.payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    try:
        directory = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``NAME.<pid>.tmp``/``.old`` files and folders left by processes that were killed."""
    for path in folder.glob("*.*.*"):
        _, pid, suffix = path.name.rsplit(".", 2)
        if suffix not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

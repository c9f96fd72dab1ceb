"""Shared fixtures. Tests that need the prepared 470 MB model share one cache per run ($KOTAE_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none (users' machines do not)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def e5_small_dir() -> Path:
    """The prepared multilingual-e5-small folder (prepared once per $KOTAE_HOME)."""
    from kotae.models import prepare

    return prepare("multilingual-e5-small")[0]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """One Milvus Lite gRPC server on 127.0.0.1 for the session (tests use their own collections)."""
    pytest.importorskip("milvus_lite", reason="the Milvus tests need kotae[milvus]")
    from kotae.indexing.milvus_testing import milvus_lite_server

    with milvus_lite_server(tmp_path_factory.mktemp("milvus") / "data") as server:
        yield server


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI (which installs kotae[milvus] from the project's files) the Milvus tests must run, not skip."""
    if os.environ.get("CI"):
        import milvus_lite  # noqa: F401

"""An engine on a temporary data dir and apps root, opened and closed around each test.

Registered for every suite in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from jobhost.config import Settings
from jobhost.engine import JobHost

EngineFactory = Callable[..., AbstractAsyncContextManager[JobHost]]


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    root = tmp_path / "apps"
    root.mkdir()
    return root


@pytest.fixture
def engine_factory(tmp_path: Path, apps: Path) -> EngineFactory:
    """``async with engine_factory(**settings) as engine`` — same data dir on every call."""

    @asynccontextmanager
    async def open_engine(**overrides: Any) -> AsyncIterator[JobHost]:
        values: dict[str, Any] = {
            "apps_roots": [apps],
            "data_dir": tmp_path / "data",
            "watch": False,
            "notifications_enabled": False,
            "scheduler_enabled": False,
        }
        values.update(overrides)
        engine = JobHost(Settings(**values))
        await engine.open()
        try:
            yield engine
        finally:
            await engine.aclose()

    return open_engine

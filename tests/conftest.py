"""Shared test set-up: real services are required in CI and skipped (with a reason) elsewhere."""

from __future__ import annotations

import contextlib
import os

import pytest

IN_CI = bool(os.environ.get("CI"))

# Fixture modules, shared by every suite (tests import their helpers, not their fixtures).
pytest_plugins = [
    "tests.storefixtures",
    "tests.enginefixtures",
    "tests.serverfixtures",
    "tests.notifyfixtures",
    "tests.uifixtures",
]


def require_service(available: bool, reason: str) -> None:
    """Skip locally when a real service is missing; fail in CI, where it must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """End the runner processes that this test run's data dirs started, and the jobs they hold.

    A runner outlives the engine that started it on purpose (runs survive a server restart),
    and keeps an unacknowledged exit record for days; a test's data dir is never served
    again, so whatever its runner still holds is ended here rather than left behind.
    """
    import psutil

    base = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "jobhost.runner" not in cmdline or not any(arg.startswith(base) for arg in cmdline):
            continue
        try:
            members = [*process.children(recursive=True), process]
        except psutil.NoSuchProcess:
            continue
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(members, timeout=10)

"""Shared test set-up: real services are required in CI and skipped (with a reason) elsewhere."""

from __future__ import annotations

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

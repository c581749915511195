"""Fixtures for the server suites: a temp apps root with small jobs, the app with its
lifespan running, and HTTP clients (one cookie jar each) through ``httpx.ASGITransport``.

Import explicitly: ``from tests.serverfixtures import harness_fixture  # noqa: F401``
(the fixture is named ``harness``; the function name keeps test parameters from
shadowing the import).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.models import Execution, Principal, User
from jobhost.security import hash_password
from jobhost.server import create_app
from tests.jobfolders import write_job

ADMIN_PASSWORD = "admin-password-1"
USER_PASSWORD = "user-password-1"

HELLO = "print('line 1')\nprint('line 2')\n"
# Runs until stopped (SIGTERM ends a Python process at once).
SLOW = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
# Prints, then waits for the file named by its variable, then prints again: lets a test
# observe output arriving while the run is still going.
GATE = (
    "import os, sys, time\n"
    "print('first', flush=True)\n"
    "path = os.environ['JOBHOST_VAR_Gate']\n"
    "while not os.path.exists(path):\n"
    "    time.sleep(0.02)\n"
    "print('second', flush=True)\n"
)
GUARDED_ROLES = {
    "roles_view": ["ops_view", "ops_start", "ops_stop", "ops_restart"],
    "roles_start": ["ops_start"],
    "roles_stop": ["ops_stop"],
    "roles_restart": ["ops_restart"],
}
SECRET_ROLES = {f"roles_{a}": ["secret"] for a in ("view", "start", "stop", "restart")}


def write_apps(root: Path) -> None:
    write_job(
        root, "Lab", "Hello", {"Name": "Hello", "Description": "says hello"}, script_text=HELLO
    )
    write_job(
        root,
        "Lab",
        "Slow",
        {"Name": "Slow", "Description": "runs until stopped", "max_concurrent": 0},
        script_text=SLOW,
    )
    write_job(
        root,
        "Lab",
        "Gate",
        {
            "Name": "Gate",
            "Description": "waits for a file",
            "template_variables": {"Gate": "path of the file to wait for"},
        },
        script_text=GATE,
    )
    write_job(
        root,
        "Lab",
        "Guarded",
        {"Name": "Guarded", "Description": "role-gated", "max_concurrent": 0, **GUARDED_ROLES},
        script_text=SLOW,
    )
    write_job(
        root,
        "Lab",
        "Secret",
        {"Name": "Secret", "Description": "nobody's", "max_concurrent": 0, **SECRET_ROLES},
        script_text=SLOW,
    )
    write_job(root, "Lab", "Broken", '{"Name": ', script=None)


class Harness:
    """The running app, its engine, and helpers to make users and signed-in clients."""

    def __init__(self, app: Any, engine: JobHost, settings: Settings) -> None:
        self.app = app
        self.engine = engine
        self.settings = settings
        self._clients: list[httpx.AsyncClient] = []

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)
        self._clients.append(client)
        return client

    async def add_user(
        self, username: str, roles: list[str] | None = None, password: str = USER_PASSWORD
    ) -> User:
        user = User(
            username=username, password_hash=hash_password(password), roles=frozenset(roles or [])
        )
        await self.engine.journal.call(self.engine.store.save_user, user)
        return user

    async def login(self, username: str, password: str = USER_PASSWORD) -> httpx.AsyncClient:
        """A client signed in with a session cookie; it sends the CSRF header on every request."""
        client = self.client()
        response = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return client

    async def admin(self) -> httpx.AsyncClient:
        return await self.login("admin", ADMIN_PASSWORD)

    async def token_client(self, username: str, password: str = USER_PASSWORD) -> httpx.AsyncClient:
        """A client using a bearer token (no cookie, no CSRF header)."""
        session = await self.login(username, password)
        response = await session.post("/api/v1/auth/tokens", json={"name": "tests"})
        assert response.status_code == 201, response.text
        return self.client(headers={"Authorization": f"Bearer {response.json()['token']}"})

    async def start_as(
        self, job_id: str, username: str, roles: frozenset[str] = frozenset(), **variables: Any
    ) -> Execution:
        """Start through the engine as ``username`` (roles need not exist in the store)."""
        principal = Principal(username=username, roles=roles, superuser=False)
        return await self.engine.start(job_id, variables or None, principal)

    async def wait(self, execution_id: str) -> Execution:
        return await self.engine.wait(execution_id)

    async def wait_output(self, execution_id: str, text: str) -> None:
        """Until ``text`` is in the run's output (awaits output events, no polling)."""
        seen = b""  # text may arrive split across chunks
        async for chunk in self.engine.follow(execution_id):
            seen += chunk.data
            if text.encode() in seen or chunk.done:
                return

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    apps = tmp_path / "apps"
    if not apps.exists():
        write_apps(apps)
    values: dict[str, Any] = {
        "apps_roots": [apps],
        "data_dir": tmp_path / "data",
        "watch": False,
        "scheduler_enabled": False,
        "admin_password": ADMIN_PASSWORD,
    }
    values.update(overrides)
    return Settings(**values)


async def running_harness(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        harness = Harness(app, app.state.engine, settings)
        try:
            yield harness
        finally:
            await harness.aclose()


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path) -> AsyncIterator[Harness]:
    """The app with its lifespan running (tests that want other settings use
    ``running_harness(make_settings(tmp_path, ...))``)."""
    async for value in running_harness(make_settings(tmp_path)):
        yield value


def events(text: str) -> list[tuple[str, str | None, Any]]:
    """Parse an SSE body into ``(event, id, data)`` tuples (comments skipped)."""
    parsed = []
    for block in text.split("\n\n"):
        event, event_id, data = "message", None, None
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data = json.loads(value)
        if data is not None:
            parsed.append((event, event_id, data))
    return parsed

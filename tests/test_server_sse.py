"""Live streams over real HTTP (uvicorn in this process): output as it is written, and
the execution events feed filtered by permission."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from jobhost.server import create_app
from tests.serverfixtures import ADMIN_PASSWORD, USER_PASSWORD, Harness, make_settings


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Harness, str]]:
    settings = make_settings(tmp_path)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event for this
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    harness = Harness(app, app.state.engine, settings)
    try:
        yield harness, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def sign_in(base: str, username: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield await _login(client, username, password)


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.AsyncClient:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


async def read_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    event = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])
            event = "message"


async def test_output_stream_delivers_lines_live(live: tuple[Harness, str], tmp_path: Path) -> None:
    _, base = live
    gate = tmp_path / "gate"
    async with sign_in(base, "admin", ADMIN_PASSWORD) as client:
        started = await client.post(
            "/api/v1/jobs/start", json={"job_id": "Lab/Gate", "variables": {"Gate": str(gate)}}
        )
        execution_id = started.json()["id"]
        seen: list[tuple[str, Any]] = []
        async with client.stream("GET", f"/api/v1/jobs/output/{execution_id}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event, data in read_events(response):
                seen.append((event, data))
                if event == "output" and "first" in data["output"]:
                    # The run is still waiting for this file: the line arrived live.
                    status = (await client.get(f"/api/v1/jobs/status/{execution_id}")).json()
                    assert status["status"] == "running"
                    gate.write_text("go")
        output = "".join(d["output"] for e, d in seen if e == "output")
        assert output == "first\nsecond\n"
        assert seen[-1][0] == "end"
        assert seen[-1][1]["status"] == "succeeded"


async def test_events_feed_shows_only_visible_executions(live: tuple[Harness, str]) -> None:
    harness, base = live
    await harness.add_user("bob")
    async with (
        sign_in(base, "bob", USER_PASSWORD) as bob,
        sign_in(base, "admin", ADMIN_PASSWORD) as admin,
        bob.stream("GET", "/api/v1/jobs/events") as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        assert [await anext(lines) for _ in range(3)] == [
            "",
            "event: snapshot",
            'data: {"executions":[]}',
        ]
        secret = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Secret"})).json()
        hello = (await bob.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
        statuses = []
        event = ""
        async for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert event == "execution"
                assert data["id"] != secret["id"]
                statuses.append(data["status"])
                if data["id"] == hello["id"] and data["status"] == "succeeded":
                    break
        assert statuses[-1] == "succeeded"
        await admin.post("/api/v1/jobs/stop", json={"execution_id": secret["id"]})


async def test_events_feed_starts_with_a_snapshot_of_the_visible_live_runs(
    live: tuple[Harness, str],
) -> None:
    # A client reconnecting to /events once missed every change made while it was away.
    harness, base = live
    await harness.add_user("bob")
    async with (
        sign_in(base, "bob", USER_PASSWORD) as bob,
        sign_in(base, "admin", ADMIN_PASSWORD) as admin,
    ):
        secret = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Secret"})).json()
        slow = (await bob.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
        try:
            async with bob.stream("GET", "/api/v1/jobs/events") as response:
                event, data = await anext(read_events(response))
            assert event == "snapshot"
            assert [e["id"] for e in data["executions"]] == [slow["id"]]
            assert data["executions"][0]["job_id"] == "Lab/Slow"
        finally:
            for started in (secret, slow):
                await admin.post("/api/v1/jobs/stop", json={"execution_id": started["id"]})

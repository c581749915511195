"""JobHost mounted under a prefix by a host FastAPI app, served by uvicorn, as the README
shows: sign in, start a job, follow its output over SSE, shut down cleanly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from fastapi import FastAPI

from jobhost.server import create_app, jobhost_lifespan
from tests.serverfixtures import ADMIN_PASSWORD, make_settings


async def _serve(app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event for this
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)


async def test_a_mounted_jobhost_signs_in_runs_streams_and_shuts_down(tmp_path: Path) -> None:
    # The README's lines, verbatim but for the settings.
    # shutdown_policy "stop": the host's shutdown must reach the run (the default leaves it
    # running for the next server, which tests/test_ownership.py covers).
    jobs = create_app(make_settings(tmp_path, shutdown_policy="stop"))
    host = FastAPI(lifespan=jobhost_lifespan(jobs))
    host.mount("/jobs", jobs)

    @host.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    async for base in _serve(host):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            assert (await client.get("/")).json() == {"app": "host"}
            assert (await client.get("/jobs/healthz")).json()["status"] == "ok"
            login = await client.post(
                "/jobs/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert login.status_code == 200, login.text
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            started = await client.post("/jobs/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
            assert started.status_code == 202, started.text
            execution_id = started.json()["id"]
            seen: list[tuple[str, Any]] = []
            url = f"/jobs/api/v1/jobs/output/{execution_id}/stream"
            async with client.stream("GET", url) as response:
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        seen.append((event, json.loads(line[6:])))
            assert "".join(d["output"] for e, d in seen if e == "output") != ""
            assert seen[-1][0] == "end"
            assert seen[-1][1]["status"] == "succeeded"
            changes = jobs.state.engine.changes()
            pending = asyncio.ensure_future(anext(changes))
            await asyncio.sleep(0)  # subscribed before the start
            slow = (
                await client.post("/jobs/api/v1/jobs/start", json={"job_id": "Lab/Slow"})
            ).json()
            change = await pending
            while change.id != slow["id"] or change.pid is None:
                change = await anext(changes)
            pid = change.pid
            assert psutil.pid_exists(pid)
    # The host's shutdown ran JobHost's: the run was stopped (shutdown_policy "stop") and
    # the mounted app no longer serves.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=jobs), base_url="http://testserver"
    ) as after:
        assert (await after.get("/healthz")).status_code == 503


async def test_mounting_without_the_lifespan_says_how_to_fix_it(tmp_path: Path) -> None:
    # Once: every API call answered 500 (RuntimeError: JobHost.open() was not awaited).
    # shutdown_policy "stop": the host's shutdown must reach the run (the default leaves it
    # running for the next server, which tests/test_ownership.py covers).
    jobs = create_app(make_settings(tmp_path, shutdown_policy="stop"))
    host = FastAPI()
    host.mount("/jobs", jobs)
    async for base in _serve(host):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            response = await client.get("/jobs/api/v1/jobs/catalog")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == (
        "JobHost's lifespan has not run, so its engine is not open. A host application that "
        "mounts create_app(...) must run it: FastAPI(lifespan=jobhost_lifespan(jobs_app)) "
        "(see the README, 'Embedding')"
    )

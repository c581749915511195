"""Drain for upgrades: no new starts (503 + Retry-After), ``/healthz`` says draining,
running runs finish, then the server asks to exit; ``--leave`` exits at once."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from jobhost.errors import Draining
from jobhost.models import ExecutionStatus
from tests.serverfixtures import ADMIN_PASSWORD, Harness, harness_fixture, make_settings  # noqa: F401
from tests.test_cli_local import cli_env, jobhost_argv


async def test_drain_refuses_starts_reports_draining_and_exits_after_the_runs(
    harness: Harness,
) -> None:
    admin = await harness.admin()
    running = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(running["id"], "ready")

    drained = await admin.post("/api/v1/admin/drain", json={"wait_seconds": 600})
    assert drained.status_code == 202, drained.text
    assert drained.json() == {"status": "draining", "running": 1}

    refused = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "30"
    error = refused.json()["error"]
    assert error["code"] == "draining"
    assert error["message"].startswith(
        "This JobHost server is draining for an upgrade and starts nothing new; 'Lab/Hello'"
    )
    health = await admin.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert not harness.engine.exit_requested.is_set()  # a run is still going

    await harness.engine.stop(execution_id=running["id"])
    await asyncio.wait_for(harness.engine.exit_requested.wait(), 60)
    final = await harness.engine.status(running["id"])
    assert final.status is ExecutionStatus.STOPPED
    audit = (await admin.get("/api/v1/audit", params={"action": "server.drain"})).json()
    assert [e["user"] for e in audit["events"]] == ["admin"]


async def test_resume_ends_the_drain(harness: Harness) -> None:
    admin = await harness.admin()
    assert (await admin.post("/api/v1/admin/drain", json={})).status_code == 202
    with pytest.raises(Draining):
        await harness.engine.start("Lab/Hello")
    resumed = await admin.post("/api/v1/admin/resume")
    assert resumed.status_code == 200
    assert (await admin.get("/healthz")).json()["status"] == "ok"
    started = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
    assert started.status_code == 202, started.text


async def test_drain_and_instances_are_for_superusers_only(harness: Harness) -> None:
    await harness.add_user("bob", ["ops"])
    bob = await harness.login("bob")
    for method, path in (
        ("POST", "/api/v1/admin/drain"),
        ("POST", "/api/v1/admin/resume"),
        ("GET", "/api/v1/instances"),
    ):
        response = await bob.request(method, path)
        assert response.status_code == 403, (path, response.text)
    assert not harness.engine.draining
    admin = await harness.admin()
    listed = (await admin.get("/api/v1/instances")).json()
    assert listed["current"] == harness.engine.instance_id
    (me,) = listed["instances"]
    assert me["alive"] is True
    assert me["kind"] == "server"


async def test_drain_with_leave_exits_at_once_and_leaves_the_run(harness: Harness) -> None:
    admin = await harness.admin()
    running = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(running["id"], "ready")
    drained = await admin.post("/api/v1/admin/drain", json={"leave": True})
    assert drained.status_code == 202
    await asyncio.wait_for(harness.engine.exit_requested.wait(), 60)
    left = await harness.engine.status(running["id"])
    assert left.status is ExecutionStatus.RUNNING
    await harness.engine.stop(execution_id=left.id)  # a next server would re-adopt it
    await harness.engine.wait(left.id)


@pytest.mark.timeout(600)  # a server and a CLI process: slow on a busy machine
def test_jobhost_drain_makes_the_server_exit_0(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = cli_env(tmp_path, JOBHOST_ADMIN_PASSWORD=ADMIN_PASSWORD)
    where = ["--apps", str(settings.apps_roots[0]), "--data-dir", str(settings.data_dir)]
    server = subprocess.Popen(
        [*jobhost_argv(), *where, "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        url = None
        for line in server.stderr:
            if line.startswith("JobHost serving"):
                url = line.split(" at ")[1].split("/ ")[0]
                break
        assert url is not None
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert token.status_code == 200, token.text
        with httpx.Client(base_url=url, cookies=token.cookies) as session:
            session.headers["X-CSRF-Token"] = token.json()["csrf_token"]
            tok = session.post("/api/v1/auth/tokens", json={"name": "drain"}).json()["token"]
        drained = subprocess.run(
            [*jobhost_argv(), "--server", url, "drain", "--wait", "30"],
            cwd=tmp_path,
            env={**env, "JOBHOST_TOKEN": tok},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert drained.returncode == 0, drained.stderr
        assert "Draining: 0 running runs may finish (up to 30 s), then exit" in drained.stderr
        assert server.wait(timeout=60) == 0  # the drain ended it, cleanly
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()

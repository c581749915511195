"""The seed's routes under /apps/WebHostTaskManagement/api/v1/jobs, served by the new system."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobhost.models import AuditQuery
from tests.serverfixtures import (
    Harness,
    make_settings,
    running_harness,
)

BASE = "/apps/WebHostTaskManagement/api/v1/jobs"


async def test_catalog_shape(harness: Harness) -> None:
    await harness.add_user("bob")
    bob = await harness.login("bob")
    body = (await bob.get(f"{BASE}/catalog")).json()
    assert body["success"] is True
    assert body["timestamp"].endswith("Z")
    assert isinstance(body["jobs"], list)
    assert body["count"] == len(body["jobs"])
    assert body["userRoles"] == []
    gate = next(j for j in body["jobs"] if j["jobId"] == "Lab/Gate")
    assert gate["appName"] == "Lab"
    assert gate["jobName"] == "Gate"
    assert gate["templateVariables"] == [
        {"name": "Gate", "description": "path of the file to wait for"}
    ]
    assert gate["permissions"] == {"canStart": True, "canStop": True, "canRestart": True}
    assert "Lab/Secret" not in [j["jobId"] for j in body["jobs"]]


async def test_one_job_is_still_an_array(tmp_path: Path) -> None:
    from tests.jobfolders import write_job

    write_job(tmp_path / "apps", "Only", "One")
    async for h in running_harness(make_settings(tmp_path)):
        body = (await (await h.admin()).get(f"{BASE}/catalog")).json()
        assert body["jobs"][0]["jobId"] == "Only/One"
        assert body["count"] == 1


async def test_start_stop_jobs_and_results(harness: Harness) -> None:
    admin = await harness.admin()
    started = await admin.post(f"{BASE}/start", json={"jobId": "Lab/Slow", "variables": {}})
    assert started.status_code == 200
    body = started.json()
    assert body["success"] is True
    assert body["message"] == "Job started successfully"
    assert body["jobId"] == "Lab/Slow"
    await harness.wait_output(body["executionId"], "ready\n")

    listing = (await admin.get(BASE)).json()
    assert listing["success"] is True
    assert [j["id"] for j in listing["jobs"]] == [body["executionId"]]
    job = listing["jobs"][0]
    assert job["state"] == "Running"
    assert job["appName"] == "Lab"
    assert job["childJobs"] == []
    assert (listing["count"], listing["running"], listing["completed"]) == (1, 1, 0)

    stopped = (await admin.post(f"{BASE}/stop", json={"jobId": "Lab/Slow"})).json()
    assert stopped["status"] == "StopQueued"
    assert stopped["message"] == "Job stop command queued successfully"
    await harness.wait(body["executionId"])

    results = (await admin.get(f"{BASE}/results?maxResults=10")).json()
    assert results["success"] is True
    assert results["count"] == 1
    assert results["results"][0]["jobId"] == body["executionId"]
    assert results["results"][0]["state"] == "Stopped"
    output = (await admin.get(f"{BASE}/output?jobId={body['executionId']}")).json()
    assert output["output"] == "ready\n"


async def test_start_denied_keeps_the_error_shape(harness: Harness) -> None:
    await harness.add_user("bob")
    bob = await harness.login("bob")
    response = await bob.post(f"{BASE}/start", json={"jobId": "Lab/Secret"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No job 'Lab/Secret' in the catalog"


async def test_submit_refused_by_default(harness: Harness) -> None:
    admin = await harness.admin()
    body = {"jobName": "hi", "command": "echo hi", "executionMode": "BackgroundJob"}
    response = await admin.post(f"{BASE}/submit", json=body)
    assert response.status_code == 403
    assert "Ad-hoc commands are disabled" in response.json()["error"]["message"]
    await harness.engine.journal.flush()
    page = await harness.engine.audit_log(AuditQuery(action="adhoc.submit"))
    assert [(e.user, e.outcome) for e in page.items] == [("admin", "denied")]


async def test_mainloop_is_always_refused(tmp_path: Path) -> None:
    async for h in running_harness(make_settings(tmp_path, adhoc_enabled=True)):
        admin = await h.admin()
        body = {"jobName": "x", "command": "echo hi", "executionMode": "MainLoop"}
        response = await admin.post(f"{BASE}/submit", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "MainLoop mode ran code inside the server and is not supported; use BackgroundJob"
        )


async def test_submit_runs_a_separate_process_when_enabled(tmp_path: Path) -> None:
    async for h in running_harness(make_settings(tmp_path, adhoc_enabled=True)):
        await h.add_user("bob")
        bob = await h.login("bob")
        body = {
            "jobName": "greet",
            "command": "echo hi; rm -rf /",
            "executionMode": "BackgroundJob",
        }
        assert (
            await bob.post(f"{BASE}/submit", json=body)
        ).status_code == 403  # not in adhoc_roles
        admin = await h.admin()
        response = await admin.post(f"{BASE}/submit", json=body)
        assert response.status_code == 200
        result = response.json()
        assert result["success"] is True
        assert result["message"] == "Job submitted successfully"
        assert result["executionMode"] == "BackgroundJob"
        run = h.app.state.adhoc.runs[result["jobId"]]
        await asyncio.wait_for(run.done.wait(), 30)
        assert run.pid is not None
        assert run.pid != __import__("os").getpid()
        output = (await admin.get(f"{BASE}/output?jobId={result['jobId']}")).json()
        # No shell: ';' and the rest are plain arguments to echo.
        assert output["output"] == "hi; rm -rf /\n"
        assert output["state"] == "Completed"
        results = (await admin.get(f"{BASE}/results")).json()["results"]
        assert result["jobId"] in [r["jobId"] for r in results]
        assert (await bob.get(f"{BASE}/output?jobId={result['jobId']}")).status_code == 404
        await h.engine.journal.flush()
        page = await h.engine.audit_log(AuditQuery(action="adhoc.submit", user="admin"))
        assert page.items[0].details["argv"] == ["echo", "hi;", "rm", "-rf", "/"]

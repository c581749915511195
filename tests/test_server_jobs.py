"""Job routes over HTTP: start, status, output, idempotency, stop, restart, history, catalog."""

from __future__ import annotations

from pathlib import Path

from jobhost.store import make_store
from tests.jobfolders import write_job
from tests.serverfixtures import (
    SLOW,
    Harness,
    events,
    make_settings,
    running_harness,
    write_apps,
)


async def test_start_status_output_by_offset(harness: Harness) -> None:
    admin = await harness.admin()
    started = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
    assert started.status_code == 202
    execution = started.json()
    assert execution["job_id"] == "Lab/Hello"
    assert execution["user"] == "admin"
    assert execution["trigger"] == "user"
    await harness.wait(execution["id"])

    status = (await admin.get(f"/api/v1/jobs/status/{execution['id']}")).json()
    assert status["status"] == "succeeded"
    assert status["exit_code"] == 0
    assert status["ended_at"].endswith("Z")

    first = (await admin.get(f"/api/v1/jobs/output/{execution['id']}?offset=0&limit=7")).json()
    assert first == {
        "output": "line 1\n",
        "offset": 0,
        "next_offset": 7,
        "done": False,
        "stderr": [],
    }
    rest = (await admin.get(f"/api/v1/jobs/output/{execution['id']}?offset=7")).json()
    assert rest["output"] == "line 2\n"
    end = (
        await admin.get(f"/api/v1/jobs/output/{execution['id']}?offset={rest['next_offset']}")
    ).json()
    assert end["output"] == ""
    assert end["done"] is True


async def test_stream_of_a_finished_run_and_resume(harness: Harness) -> None:
    admin = await harness.admin()
    execution = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(execution["id"])
    response = await admin.get(f"/api/v1/jobs/output/{execution['id']}/stream")
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    assert "".join(d["output"] for e, _, d in got if e == "output") == "line 1\nline 2\n"
    assert got[-1][0] == "end"
    assert got[-1][2]["status"] == "succeeded"

    resumed = await admin.get(
        f"/api/v1/jobs/output/{execution['id']}/stream", headers={"Last-Event-ID": "7"}
    )
    outputs = [(i, d) for e, i, d in events(resumed.text) if e == "output"]
    assert [d["output"] for _, d in outputs] == ["line 2\n"]
    assert outputs[0][0] == "14"
    by_query = await admin.get(f"/api/v1/jobs/output/{execution['id']}/stream?offset=14")
    assert [e for e, _, _ in events(by_query.text)] == ["end"]


async def test_idempotency_key_returns_the_same_execution(harness: Harness) -> None:
    admin = await harness.admin()
    headers = {"Idempotency-Key": "deploy-42"}
    one = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"}, headers=headers)
    two = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"}, headers=headers)
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] == two.json()["id"]
    running = (await admin.get("/api/v1/jobs/running")).json()["executions"]
    assert [e["id"] for e in running] == [one.json()["id"]]
    stopped = await admin.post("/api/v1/jobs/stop", json={"execution_id": one.json()["id"]})
    assert stopped.status_code == 202
    assert [e["id"] for e in stopped.json()["executions"]] == [one.json()["id"]]
    final = await harness.wait(one.json()["id"])
    assert final.status.value == "stopped"


async def test_stop_by_job_and_conflict_when_nothing_runs(harness: Harness) -> None:
    admin = await harness.admin()
    a = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    b = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(a["id"], "ready")
    stopped = await admin.post("/api/v1/jobs/stop", json={"job_id": "Lab/Slow"})
    assert {e["id"] for e in stopped.json()["executions"]} == {a["id"], b["id"]}
    await harness.wait(a["id"])
    await harness.wait(b["id"])
    again = await admin.post("/api/v1/jobs/stop", json={"job_id": "Lab/Slow"})
    assert again.status_code == 409
    assert "has no running execution to stop" in again.json()["error"]["message"]
    both = await admin.post(
        "/api/v1/jobs/stop", json={"job_id": "Lab/Slow", "execution_id": a["id"]}
    )
    assert both.status_code == 400
    assert both.json()["error"]["message"] == "Give exactly one of job_id or execution_id"


async def test_restart_replaces_the_run(harness: Harness) -> None:
    admin = await harness.admin()
    first = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    restarted = await admin.post("/api/v1/jobs/restart", json={"execution_id": first["id"]})
    assert restarted.status_code == 202
    body = restarted.json()
    assert body["id"] != first["id"]
    assert body["trigger"] == "restart"
    old = (await admin.get(f"/api/v1/jobs/status/{first['id']}")).json()
    assert old["status"] == "stopped"
    await admin.post("/api/v1/jobs/stop", json={"execution_id": body["id"]})
    await harness.wait(body["id"])


async def test_test_run_and_variables(harness: Harness, tmp_path: Path) -> None:
    admin = await harness.admin()
    gate = tmp_path / "open"
    gate.write_text("")
    response = await admin.post(
        "/api/v1/jobs/test", json={"job_id": "Lab/Gate", "variables": {"Gate": str(gate)}}
    )
    assert response.status_code == 202
    assert response.json()["test"] is True
    final = await harness.wait(response.json()["id"])
    assert final.status.value == "succeeded"
    unknown = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Gate", "variables": {"Gate": "x", "Nope": 1}}
    )
    assert unknown.status_code == 422
    assert "Nope" in unknown.json()["error"]["message"]
    nested = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Gate", "variables": {"Gate": {"a": 1}}}
    )
    assert nested.status_code == 422
    assert "variables.Gate" in nested.json()["error"]["message"]


async def test_history_rows_are_the_status_records(harness: Harness) -> None:
    """A history page lists each run exactly as its status route shows it, also after it
    changed (running, then finished) between two reads of the page."""
    admin = await harness.admin()
    done = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(done["id"])
    slow = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(slow["id"], "ready")

    page = await admin.get("/api/v1/jobs/history")
    assert page.headers["content-type"] == "application/json"
    rows = {e["id"]: e for e in page.json()["executions"]}
    assert rows[done["id"]] == (await admin.get(f"/api/v1/jobs/status/{done['id']}")).json()
    assert rows[slow["id"]]["status"] == "running"

    await admin.post("/api/v1/jobs/stop", json={"execution_id": slow["id"]})
    await harness.wait(slow["id"])
    again = {e["id"]: e for e in (await admin.get("/api/v1/jobs/history")).json()["executions"]}
    assert again[slow["id"]] == (await admin.get(f"/api/v1/jobs/status/{slow['id']}")).json()
    assert again[slow["id"]]["status"] == "stopped"
    assert again[done["id"]] == rows[done["id"]]


async def test_history_filters_and_cursor(harness: Harness) -> None:
    admin = await harness.admin()
    ids = []
    for _ in range(3):
        execution = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
        await harness.wait(execution["id"])
        ids.append(execution["id"])
    slow = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await admin.post("/api/v1/jobs/stop", json={"execution_id": slow["id"]})
    await harness.wait(slow["id"])

    page = (await admin.get("/api/v1/jobs/history?job_id=Lab/Hello&limit=2")).json()
    assert [e["id"] for e in page["executions"]] == [ids[2], ids[1]]
    assert page["next_cursor"]
    rest = (
        await admin.get(
            f"/api/v1/jobs/history?job_id=Lab/Hello&limit=2&cursor={page['next_cursor']}"
        )
    ).json()
    assert [e["id"] for e in rest["executions"]] == [ids[0]]
    assert rest["next_cursor"] is None

    stopped = (await admin.get("/api/v1/jobs/history?status=stopped")).json()["executions"]
    assert [e["id"] for e in stopped] == [slow["id"]]
    both = (await admin.get("/api/v1/jobs/history?status=stopped&status=succeeded")).json()
    assert len(both["executions"]) == 4
    mine = (await admin.get("/api/v1/jobs/history?user=someone-else")).json()
    assert mine["executions"] == []
    future = (await admin.get("/api/v1/jobs/history?since=2999-01-01T00:00:00Z")).json()
    assert future["executions"] == []
    bad = await admin.get("/api/v1/jobs/history?status=exploded")
    assert bad.status_code == 400
    assert "Invalid status" in bad.json()["error"]["message"]


async def test_catalog_detail_and_reload(harness: Harness, tmp_path: Path) -> None:
    await harness.add_user("bob")
    bob = await harness.login("bob")
    catalog = (await bob.get("/api/v1/jobs/catalog")).json()
    ids = [j["id"] for j in catalog["jobs"]]
    assert "Lab/Hello" in ids
    assert "Lab/Secret" not in ids  # not viewable: not listed
    assert catalog["count"] == len(ids)
    hello = next(j for j in catalog["jobs"] if j["id"] == "Lab/Hello")
    assert hello["permissions"] == {
        "view": True,
        "start": True,
        "stop": True,
        "restart": True,
        "schedule": False,
    }
    assert hello["next_fire"] is None

    admin = await harness.admin()
    run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(run["id"])
    detail = (await admin.get("/api/v1/jobs/catalog/Lab/Hello")).json()
    assert [e["id"] for e in detail["recent"]] == [run["id"]]
    assert (await bob.get("/api/v1/jobs/catalog/Lab/Secret")).status_code == 404

    write_job(tmp_path / "apps", "Lab", "Added", {"Name": "Added", "Description": "new"})
    assert (await bob.post("/api/v1/jobs/reload")).status_code == 403
    reloaded = (await admin.post("/api/v1/jobs/reload")).json()
    assert reloaded["count"] == len(harness.engine.catalog)
    assert "Lab/Broken" in [j["id"] for j in reloaded["invalid"]]
    assert (await admin.get("/api/v1/jobs/catalog/Lab/Added")).status_code == 200


async def test_samples_tail(harness: Harness) -> None:
    admin = await harness.admin()
    assert (await admin.get("/api/v1/jobs/catalog/Lab/Hello/samples")).json() == {"samples": []}
    folder = harness.settings.state_dir / "Lab" / "Hello"
    folder.mkdir(parents=True)
    lines = [f'{{"ts": {i}, "cpu_percent": {i}.5}}' for i in range(5)]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n{broken\n")
    got = (await admin.get("/api/v1/jobs/catalog/Lab/Hello/samples?limit=3")).json()["samples"]
    assert [s["ts"] for s in got] == [3, 4]  # the last 3 lines, the broken one skipped


async def test_full_queue_is_429(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Lab",
        "Queued",
        {"Name": "Q", "Description": "queues", "on_conflict": "queue"},
        script_text=SLOW,
    )
    async for h in running_harness(make_settings(tmp_path, max_queue=1)):
        admin = await h.admin()
        first = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Queued"})
        second = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Queued"})
        assert (first.status_code, second.status_code) == (202, 202)
        assert second.json()["status"] == "queued"
        third = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Queued"})
        assert third.status_code == 429
        assert "The queue is full" in third.json()["error"]["message"]
        assert third.headers["retry-after"] == "1"


async def test_metrics_and_healthz(harness: Harness) -> None:
    admin = await harness.admin()
    run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(run["id"])
    anon = harness.client()
    health = await anon.get("/healthz")
    assert health.json()["status"] == "ok"
    text = (await anon.get("/metrics")).text
    assert 'jobhost_runs_finished_total{job="Lab/Hello",status="succeeded"} 1.0' in text
    assert "jobhost_runs_running 0.0" in text
    assert "jobhost_runs_queued 0.0" in text
    assert 'jobhost_run_duration_seconds_count{job="Lab/Hello"} 1.0' in text
    assert 'jobhost_jobs{valid="false"} 1.0' in text


async def test_security_headers_everywhere(harness: Harness) -> None:
    client = harness.client()
    for path in ("/healthz", "/api/v1/jobs/catalog", "/no/such/thing"):
        response = await client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


async def test_a_stopped_run_says_who_stopped_it(harness: Harness, tmp_path: Path) -> None:
    admin = await harness.admin()
    await harness.add_user("ops", ["admin"])
    by_token = await harness.token_client("ops")
    a = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    b = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(a["id"], "ready")
    await harness.wait_output(b["id"], "ready")
    await admin.post("/api/v1/jobs/stop", json={"execution_id": a["id"]})
    await by_token.post("/api/v1/jobs/stop", json={"execution_id": b["id"]})
    await harness.wait(a["id"])
    await harness.wait(b["id"])
    first = (await admin.get(f"/api/v1/jobs/status/{a['id']}")).json()
    second = (await admin.get(f"/api/v1/jobs/status/{b['id']}")).json()
    assert (first["status"], first["stopped_by"]) == ("stopped", "admin")
    assert (second["status"], second["stopped_by"]) == ("stopped", "ops (token tests)")
    page = (await admin.get("/api/v1/jobs/history", params={"job_id": "Lab/Slow"})).json()
    assert {e["id"]: e["stopped_by"] for e in page["executions"]} == {
        a["id"]: "admin",
        b["id"]: "ops (token tests)",
    }


async def test_a_timed_out_run_was_stopped_by_its_timeout(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Lab",
        "Late",
        {"Name": "Late", "timeout_seconds": 1, "stop_grace_seconds": 1},
        script_text="import time\ntime.sleep(60)\n",
    )
    async for harness in running_harness(make_settings(tmp_path)):
        admin = await harness.admin()
        started = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Late"})).json()
        await harness.wait(started["id"])
        ended = (await admin.get(f"/api/v1/jobs/status/{started['id']}")).json()
        assert (ended["status"], ended["stopped_by"]) == ("timed_out", "timeout")
        done = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
        await harness.wait(done["id"])
        finished = (await admin.get(f"/api/v1/jobs/status/{done['id']}")).json()
        assert finished["stopped_by"] is None


async def test_output_says_which_text_came_from_stderr(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Lab",
        "Mixed",
        {"Name": "Mixed"},
        script_text=(
            "import sys\n"
            "print('checking the disk', flush=True)\n"
            "print('disk /srv is full', file=sys.stderr, flush=True)\n"
        ),
    )
    async for harness in running_harness(make_settings(tmp_path)):
        admin = await harness.admin()
        started = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Mixed"})).json()
        await harness.wait(started["id"])
        body = (await admin.get(f"/api/v1/jobs/output/{started['id']}")).json()
        text = body["output"]
        assert [text[a:b] for a, b in body["stderr"]] == ["disk /srv is full\n"]
        stream = await admin.get(f"/api/v1/jobs/output/{started['id']}/stream")
        chunks = [data for name, _, data in events(stream.text) if name == "output"]
        marked = [c["output"][a:b] for c in chunks for a, b in c["stderr"]]
        assert marked == ["disk /srv is full\n"]


async def test_a_run_stopped_by_the_server_shutting_down_says_so(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, shutdown_policy="stop")
    execution_id = ""
    async for harness in running_harness(settings):
        admin = await harness.admin()
        execution_id = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()[
            "id"
        ]
        await harness.wait_output(execution_id, "ready")
    store = make_store(settings)
    try:
        stopped = store.get_execution(execution_id)
    finally:
        store.close()
    assert stopped is not None
    assert (stopped.status.value, stopped.stopped_by) == ("stopped", "server shutdown")


async def test_start_later_over_http(harness: Harness) -> None:
    admin = await harness.admin()
    both = await admin.post(
        "/api/v1/jobs/start",
        json={"job_id": "Lab/Hello", "at": "2030-01-01T06:00:00+01:00", "delay_seconds": 5},
    )
    assert both.status_code == 400
    assert both.json()["error"]["message"] == "Give at or delay_seconds, not both"
    naive = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Hello", "at": "2030-01-01T06:00:00"}
    )
    assert naive.status_code == 400
    assert "at must carry a UTC offset" in naive.json()["error"]["message"]
    later = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Hello", "delay_seconds": 600}
    )
    assert later.status_code == 202
    planned = later.json()
    assert (planned["status"], planned["started_at"]) == ("scheduled", None)
    assert planned["due_at"] is not None
    listed = (await admin.get("/api/v1/jobs/scheduled")).json()["executions"]
    assert [run["id"] for run in listed] == [planned["id"]]
    stopped = await admin.post("/api/v1/jobs/stop", json={"execution_id": planned["id"]})
    assert stopped.status_code == 202
    assert stopped.json()["executions"][0]["status"] == "stopped"
    assert (await admin.get("/api/v1/jobs/scheduled")).json()["executions"] == []

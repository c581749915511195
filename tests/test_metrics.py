"""/metrics after real runs, parsed with prometheus_client's own parser; who may read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jobhost.clock import ManualClock
from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.host import scheduler_for
from jobhost.models import Execution, ExecutionStatus, Trigger
from jobhost.server.metrics import Metrics, RunMetrics
from tests.jobfolders import write_job
from tests.notifyfixtures import SmtpServer
from tests.serverfixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Harness,
    make_settings,
    running_harness,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FAIL = "import sys\nprint('failing')\nsys.exit(3)\n"
SECRET_VALUE = "value-that-must-not-become-a-label"


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def write_metric_jobs(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    apps = settings.apps_roots[0]
    write_job(apps, "Lab", "Fail", {"Name": "Fail", "Description": "exits 3"}, script_text=FAIL)
    write_job(
        apps,
        "Lab",
        "Tick",
        {"Name": "Tick", "Description": "every second", "default_schedule": "* * * * * *"},
        script_text="print('tick')\n",
    )
    return settings


async def first_scheduled_end(harness: Harness) -> Execution:
    async for change in harness.engine.changes():
        if change.job_id == "Lab/Tick" and change.status.terminal:
            return change
    raise AssertionError("the change stream ended")


async def test_metrics_after_real_runs_parse_and_count(tmp_path: Path) -> None:
    settings = write_metric_jobs(tmp_path).model_copy(update={"scheduler_enabled": True})
    async for harness in running_harness(settings):
        ticked = asyncio.create_task(first_scheduled_end(harness))
        admin = await harness.admin()
        bad = await harness.client().post(
            "/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"}
        )
        assert bad.status_code == 401
        hello = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
        fail = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Fail"})).json()
        gate = tmp_path / SECRET_VALUE
        gate.write_text("open")
        gated = await admin.post(
            "/api/v1/jobs/start", json={"job_id": "Lab/Gate", "variables": {"Gate": str(gate)}}
        )
        assert gated.status_code == 202, gated.text
        done = await harness.wait(hello["id"])
        await harness.wait(fail["id"])
        await harness.wait(gated.json()["id"])
        await asyncio.wait_for(ticked, timeout=60)

        response = await harness.client().get("/metrics")
        text = response.text
        samples = parse(text)
        assert SECRET_VALUE not in text
        assert value(samples, "jobhost_runs_started_total", job="Lab/Hello", trigger="user") == 1
        assert value(samples, "jobhost_runs_finished_total", job="Lab/Hello", status="succeeded")
        assert value(samples, "jobhost_runs_finished_total", job="Lab/Fail", status="failed") == 1
        assert value(samples, "jobhost_run_duration_seconds_count", job="Lab/Hello") == 1
        assert value(samples, "jobhost_run_duration_seconds_bucket", job="Lab/Hello", le="+Inf")
        assert done.ended_at is not None
        assert value(
            samples, "jobhost_job_last_success_timestamp_seconds", job="Lab/Hello"
        ) == pytest.approx(done.ended_at.timestamp(), abs=1e-3)
        assert value(
            samples, "jobhost_job_last_finish_timestamp_seconds", job="Lab/Fail", status="failed"
        )
        assert value(samples, "jobhost_job_last_success_timestamp_seconds", job="Lab/Fail") is None
        assert value(samples, "jobhost_job_consecutive_failures", job="Lab/Fail") == 1
        assert value(samples, "jobhost_job_consecutive_failures", job="Lab/Hello") == 0
        started = value(samples, "jobhost_schedule_fires_total", job="Lab/Tick", outcome="started")
        assert started is not None
        assert started >= 1
        lateness = value(samples, "jobhost_schedule_lateness_seconds_count")
        assert lateness is not None
        assert lateness >= 1
        waits = value(samples, "jobhost_queue_wait_seconds_count")
        assert waits is not None
        assert waits >= 3
        assert value(samples, "jobhost_job_schedule_interval_seconds", job="Lab/Tick") == 1
        assert value(samples, "jobhost_job_schedule_interval_seconds", job="Lab/Hello") is None
        assert value(samples, "jobhost_scheduler_up") == 1
        assert value(samples, "jobhost_jobs", valid="false") == 1
        assert value(samples, "jobhost_logins_total", outcome="succeeded") == 1
        assert value(samples, "jobhost_logins_total", outcome="failed") == 1
        assert value(samples, "jobhost_build_info", version="0.1.0") == 1
        assert value(samples, "process_cpu_seconds_total") is not None
        assert any(name == "python_gc_objects_collected_total" for name, _ in samples)
        job_labels = {dict(labels).get("job") for _, labels in samples} - {None}
        assert job_labels <= set(harness.engine.catalog)


async def test_restarts_and_openmetrics(harness: Harness) -> None:
    admin = await harness.admin()
    run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
    await harness.wait_output(run["id"], "ready")
    restarted = await admin.post("/api/v1/jobs/restart", json={"execution_id": run["id"]})
    assert restarted.status_code == 202, restarted.text
    samples = await scrape(harness.client())
    assert value(samples, "jobhost_restarts_total", job="Lab/Slow") == 1
    assert value(samples, "jobhost_runs_started_total", job="Lab/Slow", trigger="restart") == 1
    open_metrics = await harness.client().get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


def remote_client(harness: Harness, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=harness.app, client=("203.0.113.7", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


async def test_metrics_from_outside_metrics_allow_need_a_metrics_token(harness: Harness) -> None:
    async with remote_client(harness) as anonymous:
        denied = await anonymous.get("/metrics")
    assert denied.status_code == 401
    assert "Sign in first" in denied.json()["error"]["message"]

    await harness.add_user("viewer")
    await harness.add_user("prometheus", roles=["metrics"])
    for username, status in (("viewer", 403), ("prometheus", 200), ("admin", 200)):
        password = ADMIN_PASSWORD if username == "admin" else USER_PASSWORD
        local = await harness.token_client(username, password)
        async with remote_client(harness, headers=dict(local.headers)) as remote:
            response = await remote.get("/metrics")
        assert response.status_code == status, (username, response.text)
        if status == 403:
            message = response.json()["error"]["message"]
            assert "one of the roles metrics (settings.metrics_roles)" in message
            assert "127.0.0.1, ::1" in message


async def test_metrics_allow_lets_a_network_in_without_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, metrics_allow=["203.0.113.0/24"])
    async for harness in running_harness(settings):
        async with remote_client(harness) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 200
        local = await harness.client().get("/metrics")
        assert local.status_code == 401  # loopback is no longer in the list


def test_a_bad_metrics_allow_entry_is_refused_with_the_entry(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"'10\.0\.0\.300' is not an address"):
        make_settings(tmp_path, metrics_allow=["10.0.0.300"])


async def test_last_success_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async for harness in running_harness(settings):
        admin = await harness.admin()
        run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
        done = await harness.wait(run["id"])
    assert done.ended_at is not None
    async for harness in running_harness(settings):
        samples = await scrape(harness.client())
        assert value(
            samples, "jobhost_job_last_success_timestamp_seconds", job="Lab/Hello"
        ) == pytest.approx(done.ended_at.timestamp(), abs=1e-3)
        assert (
            value(samples, "jobhost_runs_finished_total", job="Lab/Hello", status="succeeded")
            is None
        )


@asynccontextmanager
async def measured_engine(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[JobHost, Metrics]]:
    values: dict[str, Any] = {
        "apps_roots": [tmp_path / "apps"],
        "data_dir": tmp_path / "data",
        "watch": False,
        "notifications_enabled": False,
        "scheduler_enabled": False,
    }
    values.update(overrides)
    engine = JobHost(Settings(**values))
    metrics = Metrics(engine)
    engine.hooks.append(metrics.runs)
    await engine.open()
    try:
        yield engine, metrics
    finally:
        await engine.aclose()


async def rendered(metrics: Metrics) -> Samples:
    body, _ = await metrics.render(None)
    return parse(body.decode())


async def test_fires_that_fell_behind_count_as_coalesced_and_missed(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(
        apps,
        "Lab",
        "Often",
        {"Name": "Often", "default_schedule": "* * * * * */5", "misfire_grace_seconds": 30},
    )
    write_job(
        apps,
        "Lab",
        "Rare",
        {"Name": "Rare", "default_schedule": "* * * * * */5", "misfire_grace_seconds": 1},
    )
    t0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    async with measured_engine(tmp_path) as (engine, metrics):
        clock = ManualClock(t0)
        scheduler = scheduler_for(engine, clock=clock)
        await scheduler.start()
        try:
            clock.advance(52)  # ten fires due at once, the newest 2 s ago
            await scheduler.settle()
        finally:
            await scheduler.aclose()
        samples = await rendered(metrics)
    fires = "jobhost_schedule_fires_total"
    assert value(samples, fires, job="Lab/Often", outcome="started") == 1
    assert value(samples, fires, job="Lab/Often", outcome="coalesced") == 9
    assert value(samples, fires, job="Lab/Rare", outcome="missed") == 10
    assert value(samples, fires, job="Lab/Rare", outcome="started") is None
    assert value(samples, "jobhost_schedule_lateness_seconds_count") == 1


async def test_notification_attempts_count_by_channel_and_outcome(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    apps = tmp_path / "apps"
    notify = [{"on": ["failed"], "channel": "ops"}, {"on": ["failed"], "channel": "nowhere"}]
    write_job(apps, "Lab", "Fail", {"Name": "Fail", "notify": notify}, script_text=FAIL)
    settings = {
        "notifications_enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_server.port,
        "channels": {"ops": {"type": "email", "to": ["oncall@example.com"]}},
    }
    async with measured_engine(tmp_path, **settings) as (engine, metrics):
        execution = await engine.wait((await engine.start("Lab/Fail")).id)
        assert engine.notifier is not None
        await engine.notifier.flush()
        await engine.notifier.wait_for(
            execution.id,
            lambda found: all(d.status != "pending" for d in found) and len(found) == 2,
        )
        samples = await rendered(metrics)
    counted = "jobhost_notifications_total"
    assert value(samples, counted, channel="ops", outcome="sent") == 1
    assert value(samples, counted, channel="unknown", outcome="failed") == 1


def test_a_rejected_scheduled_fire_counts_as_a_failure_in_a_row() -> None:
    runs = RunMetrics(CollectorRegistry(), lambda: {"Lab/Nightly": object()})
    when = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    for n in range(2):
        runs.execution_finished(
            Execution(
                id=f"r{n}",
                job_id="Lab/Nightly",
                status=ExecutionStatus.REJECTED,
                trigger=Trigger.SCHEDULE,
                user=None,
                created_at=when,
                ended_at=when,
                scheduled_for=when,
                error="Variables rejected: Target is required",
            ),
            None,
        )
    assert runs.failure_streak["Lab/Nightly"] == 2

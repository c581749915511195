"""The Schedules API through the real app (in-process ASGI client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.jobfolders import write_job
from tests.serverfixtures import Harness, make_settings, running_harness, write_apps


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Ops",
        "Nightly",
        {
            "Name": "Nightly",
            "default_schedule": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "roles_schedule": ["ops"],
            "template_variables": {"Depth": {"type": "integer", "default": 1}},
        },
    )
    async for value in running_harness(make_settings(tmp_path, scheduler_enabled=True)):
        yield value


async def test_list_shows_every_visible_job_with_its_schedule(harness: Harness) -> None:
    client = await harness.admin()
    response = await client.get("/api/v1/jobs/schedules")
    assert response.status_code == 200
    schedules = {s["job_id"]: s for s in response.json()["schedules"]}
    nightly = schedules["Ops/Nightly"]
    assert set(nightly) == {
        "job_id",
        "schedule",
        "description",
        "problem",
        "timezone",
        "enabled",
        "source",
        "variables",
        "next_fires",
        "last_fire",
        "can_edit",
    }
    assert (nightly["schedule"], nightly["timezone"], nightly["source"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        "job.json",
    )
    assert len(nightly["next_fires"]) == 5
    assert nightly["description"] == "At 03:00, Europe/Berlin"
    assert nightly["problem"] is None
    assert all(t.endswith(":00:00Z") for t in nightly["next_fires"])
    assert nightly["last_fire"] is None
    assert schedules["Lab/Hello"]["source"] == "none"
    assert schedules["Lab/Hello"]["next_fires"] == []


async def test_put_get_delete_an_override(harness: Harness) -> None:
    await harness.add_user("olga", ["ops"])
    client = await harness.login("olga")
    url = "/api/v1/jobs/schedules/Ops/Nightly"
    response = await client.put(url, json={"schedule": "*/10 * * * *", "variables": {"Depth": 3}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["schedule"], body["source"], body["variables"], body["can_edit"]) == (
        "*/10 * * * *",
        "override",
        {"Depth": 3},
        True,
    )
    assert (await client.get(url)).json()["schedule"] == "*/10 * * * *"
    catalog = (await client.get("/api/v1/jobs/catalog/Ops/Nightly")).json()
    assert catalog["next_fire"] == body["next_fires"][0]

    response = await client.delete(url)
    assert response.status_code == 200
    assert (response.json()["schedule"], response.json()["source"]) == ("0 3 * * *", "job.json")


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"schedule": "* * *"}, "invalid_schedule", "has 3 fields; expected 5"),
        ({"timezone": "Nowhere/Land"}, "invalid_schedule", "Unknown time zone 'Nowhere/Land'"),
        ({"variables": {"Deep": 2}}, "invalid_variables", "Unknown variable 'Deep'"),
        ({"variables": {"Depth": "x"}}, "invalid_variables", "Depth must be an integer"),
    ],
)
async def test_bad_overrides_are_422_with_the_reason(
    harness: Harness, body: dict[str, object], code: str, message: str
) -> None:
    client = await harness.admin()
    response = await client.put("/api/v1/jobs/schedules/Ops/Nightly", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    if "timezone" in body:  # a form marks the zone's field, not the cron's
        assert error["details"] == {"field": "timezone"}


async def test_without_roles_schedule_it_is_403_and_invisible_jobs_are_404(
    harness: Harness,
) -> None:
    await harness.add_user("dave", ["dev"])
    client = await harness.login("dave")
    response = await client.put("/api/v1/jobs/schedules/Ops/Nightly", json={"enabled": False})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "'dave' may not change the schedule of 'Ops/Nightly': requires one of the roles ops"
    )
    response = await client.get("/api/v1/jobs/schedules/Lab/Secret")
    assert response.status_code == 404
    listed = (await client.get("/api/v1/jobs/schedules")).json()["schedules"]
    assert "Lab/Secret" not in {s["job_id"] for s in listed}


async def test_cookie_writes_need_the_csrf_header(harness: Harness) -> None:
    client = await harness.admin()
    del client.headers["X-CSRF-Token"]
    response = await client.put("/api/v1/jobs/schedules/Ops/Nightly", json={"enabled": False})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "CSRF token missing or invalid"


async def test_preview(harness: Harness) -> None:
    client = await harness.admin()
    response = await client.post(
        "/api/v1/jobs/schedules/preview", json={"schedule": "@hourly", "timezone": "Asia/Kolkata"}
    )
    assert response.status_code == 200
    fires = response.json()["next_fires"]
    assert len(fires) == 5
    assert all(t.endswith(":30:00Z") for t in fires)  # India is UTC+05:30
    response = await client.post("/api/v1/jobs/schedules/preview", json={"schedule": "61 * * * *"})
    assert response.status_code == 422
    assert "Invalid cron expression '61 * * * *'" in response.json()["error"]["message"]


async def test_a_server_that_does_not_fire_serves_schedules_and_sees_reloads(
    tmp_path: Path,
) -> None:
    # No runner here: the schedules service alone answers, and follows catalog reloads.
    apps = tmp_path / "apps"
    write_apps(apps)
    async for harness in running_harness(make_settings(tmp_path, scheduler_enabled=False)):
        assert harness.engine.scheduler is None
        client = await harness.admin()
        before = (await client.get("/api/v1/jobs/schedules")).json()["schedules"]
        assert "Ops/Late" not in {s["job_id"] for s in before}
        write_job(apps, "Ops", "Late", {"Name": "Late", "default_schedule": "0 4 * * 1-5"})
        await harness.engine.reload()
        late = (await client.get("/api/v1/jobs/schedules/Ops/Late")).json()
        assert (late["schedule"], late["description"]) == (
            "0 4 * * 1-5",
            "At 04:00, Monday through Friday, UTC",
        )
        listed = (await client.get("/api/v1/jobs/schedules")).json()["schedules"]
        assert "Ops/Late" in {s["job_id"] for s in listed}

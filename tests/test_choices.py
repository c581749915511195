"""``choices_from``: a script lists a variable's choices (no shell, a timeout, an output
cap, a cache); the job detail shows them and every start checks against the same list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.jobfolders import write_job
from tests.serverfixtures import Harness, make_settings, running_harness, write_apps

ECHO = "import os\nprint('site', os.environ['JOBHOST_VAR_Site'], flush=True)\n"
# Lists the sites, and notes each run in a file next to it (to see the cache work).
LIST_SITES = (
    "import json, os\n"
    "with open('runs.txt', 'a') as f:\n"
    "    f.write(os.environ['JOBHOST_VARIABLE'] + '\\n')\n"
    "print(json.dumps(['north', 'south']))\n"
)
LIST_PORTS = "print('8080')\nprint('')\nprint('  9090 ')\n"
SLEEPS = "import time\ntime.sleep(60)\n"
FAILS = "import sys\nprint('inventory API answered 503', file=sys.stderr)\nsys.exit(3)\n"
BAD_VALUE = "print('north')\nprint('not a site!')\n"


def job(folder: Path, name: str, script: str, *, type_: str = "string", **rule: object) -> None:
    write_job(
        folder,
        "Sites",
        name,
        {
            "Name": name,
            "template_variables": {
                "Site": {
                    "description": "which site",
                    "type": type_,
                    "pattern": "[a-z0-9]+",
                    "choices_from": {"script": "list.py", "timeout_seconds": 1, **rule},
                }
            },
            "max_concurrent": 0,
        },
        script_text=ECHO,
    )
    (folder / "Sites" / "jobs" / name / "list.py").write_text(script, encoding="utf-8")


@pytest.fixture(name="h")
async def choices_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    apps = tmp_path / "apps"
    write_apps(apps)
    job(apps, "Listed", LIST_SITES, cache_seconds=600)
    job(apps, "Ports", LIST_PORTS, type_="integer")
    job(apps, "Slow", SLEEPS)
    job(apps, "Failing", FAILS)
    job(apps, "Wrong", BAD_VALUE)
    async for harness in running_harness(make_settings(tmp_path)):
        yield harness


def site(detail: dict[str, object]) -> dict[str, object]:
    variables = detail["variables"]
    assert isinstance(variables, list)
    found: dict[str, object] = variables[0]
    return found


async def test_the_detail_lists_the_choices_and_a_start_is_checked_against_them(
    h: Harness, tmp_path: Path
) -> None:
    admin = await h.admin()
    detail = (await admin.get("/api/v1/jobs/catalog/Sites/Listed")).json()
    assert site(detail)["choices"] == ["north", "south"]
    assert site(detail)["choices_error"] is None
    assert site(detail)["choices_from"] == {
        "script": "list.py",
        "timeout_seconds": 1,
        "cache_seconds": 600,
    }
    good = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Sites/Listed", "variables": {"Site": "south"}}
    )
    assert good.status_code == 202, good.text
    await h.wait(good.json()["id"])
    bad = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Sites/Listed", "variables": {"Site": "west"}}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == {
        "Site": "Site must be one of north, south, got 'west'"
    }
    # The detail, the good start and the bad start shared one listing (cache_seconds 600).
    runs = (tmp_path / "apps" / "Sites" / "jobs" / "Listed" / "runs.txt").read_text()
    assert runs == "Site\n"


async def test_one_choice_per_line_is_typed_like_the_variable(h: Harness) -> None:
    admin = await h.admin()
    detail = (await admin.get("/api/v1/jobs/catalog/Sites/Ports")).json()
    assert site(detail)["choices"] == [8080, 9090]
    ok = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "Sites/Ports", "variables": {"Site": "9090"}}
    )
    assert ok.status_code == 202, ok.text
    await h.wait(ok.json()["id"])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Slow", "list.py did not finish within 1 s"),
        ("Failing", "inventory API answered 503"),
        ("Wrong", "list.py listed 'not a site!', which is not a valid Site: must match"),
    ],
)
async def test_a_list_that_cannot_be_made_refuses_the_start_with_the_reason(
    h: Harness, name: str, reason: str
) -> None:
    admin = await h.admin()
    detail = (await admin.get(f"/api/v1/jobs/catalog/Sites/{name}")).json()
    assert site(detail)["choices"] is None
    error = site(detail)["choices_error"]
    assert isinstance(error, str)
    assert reason in error
    refused = await admin.post(
        "/api/v1/jobs/start", json={"job_id": f"Sites/{name}", "variables": {"Site": "north"}}
    )
    assert refused.status_code == 422
    assert reason in refused.json()["error"]["message"]
    history = (await admin.get(f"/api/v1/jobs/history?job_id=Sites/{name}")).json()
    assert history["executions"] == []


async def test_the_plan_checks_against_the_listed_choices(h: Harness) -> None:
    admin = await h.admin()
    plan = (
        await admin.get("/api/v1/jobs/catalog/Sites/Listed/plan", params={"var": ["Site=east"]})
    ).json()
    assert plan["admission"]["verdict"] == "reject"
    assert "must be one of north, south" in json.dumps(plan["problems"])

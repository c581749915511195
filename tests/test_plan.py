"""``GET /api/v1/jobs/catalog/{app}/{job}/plan`` and ``jobhost plan``: what a start now
would do, with real init scripts, real runs holding the slots, and no start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jobhost.models import AuditQuery, Principal
from tests.jobfolders import write_job
from tests.serverfixtures import SLOW, make_settings, running_harness, write_apps

INIT_CHECKS_SITE = (
    "import json, sys\n"
    "values = json.load(sys.stdin)\n"
    "if values.get('Site') == 'closed':\n"
    "    print('site closed is being retired', file=sys.stderr)\n"
    "    sys.exit(2)\n"
    "values['Checked'] = 'yes'\n"
    "print(json.dumps(values))\n"
)


def write_plan_apps(root: Path) -> None:
    write_apps(root)
    write_job(
        root,
        "Plan",
        "Nightly",
        {
            "Name": "Nightly",
            "default_schedule": "30 2 * * *",
            "timezone": "Europe/Paris",
            "argumentlist": ["--site", "{{Site}}"],
            "env": {"SITE_TOKEN": "{{Token}}"},
            "template_variables": {
                "Site": "the site",
                "Checked": {"description": "set by init", "default": "no"},
                "Token": {"description": "API token", "secret": True, "default": "s3cr3t-value"},
            },
            "timeout_seconds": 120,
            "roles_view": ["ops_view", "ops_start"],
            "roles_start": ["ops_start"],
        },
        init=("init-job.py", INIT_CHECKS_SITE),
    )
    write_job(
        root,
        "Plan",
        "Queued",
        {"Name": "Queued", "max_concurrent": 1, "on_conflict": "queue"},
        script_text=SLOW,
    )
    write_job(
        root,
        "Plan",
        "PerSite",
        {
            "Name": "PerSite",
            "template_variables": {"Site": "the site"},
            "concurrency_key": "{{Site}}",
            "max_concurrent": 1,
            "on_conflict": "reject",
        },
        script_text=SLOW,
    )
    write_job(
        root,
        "Plan",
        "Single",
        {"Name": "Single", "max_concurrent": 1, "on_conflict": "reject"},
        script_text=SLOW,
    )


async def test_the_plan_shows_fires_argv_env_init_and_limits(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        answer = await admin.get(
            "/api/v1/jobs/catalog/Plan/Nightly/plan", params={"var": ["Site=north"]}
        )
        assert answer.status_code == 200, answer.text
        plan = answer.json()
        schedule = plan["schedule"]
        assert schedule["timezone"] == "Europe/Paris"
        assert len(schedule["next"]) == 5
        # 02:30 in Paris is 01:30 or 00:30 UTC, depending on the season.
        assert all("T02:30:00+0" in fire["local"] for fire in schedule["next"])
        assert plan["init"] == {"script": "init-job.py", "verdict": "accepted", "message": None}
        assert plan["variables"] == {"Site": "north", "Checked": "yes", "Token": "***"}
        assert plan["argv"][-2:] == ["--site", "north"]
        assert plan["cwd"].endswith("Plan/jobs/Nightly")
        env = plan["env"]
        assert env["SITE_TOKEN"] == "***"
        assert env["JOBHOST_VAR_Token"] == "***"
        assert "s3cr3t-value" not in json.dumps(plan)
        assert env["JOBHOST_VAR_Site"] == "north"
        assert plan["limits"]["timeout_seconds"] == 120
        assert plan["admission"]["verdict"] == "start"
        # Seeing is not doing: nothing ran, nothing was recorded.
        history = (await admin.get("/api/v1/jobs/history?job_id=Plan/Nightly")).json()
        assert history["executions"] == []


async def test_the_init_scripts_refusal_and_bad_variables_are_a_reject(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        refused = (
            await admin.get(
                "/api/v1/jobs/catalog/Plan/Nightly/plan", params={"var": ["Site=closed"]}
            )
        ).json()
        assert refused["init"]["verdict"] == "rejected"
        assert refused["init"]["message"] == "site closed is being retired"
        assert refused["admission"]["verdict"] == "reject"
        assert "site closed is being retired" in refused["admission"]["reason"]
        assert refused["argv"] is None

        missing = (await admin.get("/api/v1/jobs/catalog/Plan/Nightly/plan")).json()
        assert missing["admission"]["verdict"] == "reject"
        assert "Site" in missing["admission"]["reason"]


async def test_queue_position_and_reject_follow_the_live_runs(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        first = await h.engine.start("Plan/Queued")
        await h.wait_output(first.id, "ready")
        plan = (await admin.get("/api/v1/jobs/catalog/Plan/Queued/plan")).json()
        assert plan["admission"]["verdict"] == "queue"
        assert plan["admission"]["position"] == 1
        second = await h.engine.start("Plan/Queued")
        assert second.status.value == "queued"
        plan = (await admin.get("/api/v1/jobs/catalog/Plan/Queued/plan")).json()
        assert plan["admission"]["position"] == 2

        single = await h.engine.start("Plan/Single")
        await h.wait_output(single.id, "ready")
        plan = (await admin.get("/api/v1/jobs/catalog/Plan/Single/plan")).json()
        assert plan["admission"]["verdict"] == "reject"
        assert "on_conflict=reject" in plan["admission"]["reason"]
        assert plan["admission"]["position"] is None
        for execution in (second, first, single):
            await h.engine.stop(execution_id=execution.id)
            await h.wait(execution.id)


async def test_a_plan_needs_the_start_right_and_a_denial_is_audited(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    async for h in running_harness(make_settings(tmp_path)):
        await h.add_user("viewer", ["ops_view"])
        await h.add_user("starter", ["ops_start"])
        viewer = await h.login("viewer")
        denied = await viewer.get(
            "/api/v1/jobs/catalog/Plan/Nightly/plan", params={"var": ["Site=a"]}
        )
        assert denied.status_code == 403
        assert "requires the start right" in denied.json()["error"]["message"]
        starter = await h.login("starter")
        allowed = await starter.get(
            "/api/v1/jobs/catalog/Plan/Nightly/plan", params={"var": ["Site=a"]}
        )
        assert allowed.status_code == 200
        assert allowed.json()["env"]["JOBHOST_ROLES"] == "ops_start"
        audit = await h.engine.audit_log(AuditQuery())
        assert any(
            e.action == "job.plan" and e.outcome == "denied" and e.user == "viewer"
            for e in audit.items
        )
        bad = await starter.get("/api/v1/jobs/catalog/Plan/Nightly/plan", params={"var": ["x"]})
        assert bad.status_code == 400
        assert "var=NAME=VALUE" in bad.json()["error"]["message"]


async def test_the_local_cli_plans_against_the_stored_runs(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    settings = make_settings(tmp_path)
    async for h in running_harness(settings):
        running = await h.engine.start("Plan/Single", None, Principal("admin", superuser=True))
        await h.wait_output(running.id, "ready")
        base = [
            sys.executable,
            "-m",
            "jobhost",
            "--apps",
            str(tmp_path / "apps"),
            "--data-dir",
            str(tmp_path / "data"),
            "plan",
        ]
        shown = subprocess.run(
            [*base, "Plan/Nightly", "--var", "Site=south"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "If started now: start" in shown.stdout
        assert "--site south" in shown.stdout
        assert "s3cr3t-value" not in shown.stdout
        assert "Europe/Paris" in shown.stdout
        refused = subprocess.run(
            [*base, "Plan/Single", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 1
        assert json.loads(refused.stdout)["admission"]["verdict"] == "reject"
        await h.engine.stop(execution_id=running.id)
        await h.wait(running.id)


async def test_the_plan_counts_per_concurrency_key_like_a_start(tmp_path: Path) -> None:
    write_plan_apps(tmp_path / "apps")
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        north = await h.engine.start("Plan/PerSite", {"Site": "north"})
        await h.wait_output(north.id, "ready")
        path = "/api/v1/jobs/catalog/Plan/PerSite/plan"
        same = (await admin.get(path, params={"var": ["Site=north"]})).json()
        assert same["admission"]["verdict"] == "reject"
        assert "north" in same["admission"]["reason"]
        other = (await admin.get(path, params={"var": ["Site=south"]})).json()
        assert other["admission"]["verdict"] == "start"
        assert "concurrency_key 'south'" in other["admission"]["reason"]
        await h.engine.stop(execution_id=north.id)
        await h.wait(north.id)

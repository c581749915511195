"""``--dry-run`` / ``dry_run``: the script gets ``JOBHOST_DRY_RUN=1`` (``context.dry_run``
in the SDK), the run is recorded and shown as a dry run, and the example jobs that change
things change nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from jobhost.models import AuditQuery, HistoryQuery
from tests.examples_support import APPS
from tests.jobfolders import write_job
from tests.serverfixtures import make_settings, running_harness

TELLS = (
    "import os\n"
    "from jobhost.job import context\n"
    "print('env', os.environ['JOBHOST_DRY_RUN'], 'sdk', context.dry_run, flush=True)\n"
)


async def test_a_dry_run_reaches_the_script_and_is_recorded_as_one(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "Dry", "Tells", {"Name": "Tells"}, script_text=TELLS)
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        started = await admin.post(
            "/api/v1/jobs/start", json={"job_id": "Dry/Tells", "dry_run": True}
        )
        assert started.status_code == 202, started.text
        assert started.json()["dry_run"] is True
        run = started.json()["id"]
        await h.wait(run)
        output = (await admin.get(f"/api/v1/jobs/output/{run}")).json()["output"]
        assert output == "env 1 sdk True\n"

        real = (await admin.post("/api/v1/jobs/start", json={"job_id": "Dry/Tells"})).json()
        await h.wait(real["id"])
        assert (await admin.get(f"/api/v1/jobs/output/{real['id']}")).json()[
            "output"
        ] == "env 0 sdk False\n"

        tested = await admin.post(
            "/api/v1/jobs/test", json={"job_id": "Dry/Tells", "dry_run": True}
        )
        await h.wait(tested.json()["id"])
        assert tested.json()["dry_run"] is True
        assert tested.json()["test"] is True

        # From the store, not from memory: the flag is a column.
        stored = await h.engine.journal.call(h.engine.store.get_execution, run)
        assert stored is not None
        assert stored.dry_run
        page = await h.engine.history(HistoryQuery(job_id="Dry/Tells"))
        assert [e.dry_run for e in page.items] == [True, False, True]
        history = (await admin.get("/api/v1/jobs/history?job_id=Dry/Tells")).json()
        assert [e["dry_run"] for e in history["executions"]] == [True, False, True]
        audit = await h.engine.audit_log(AuditQuery(action="job.start"))
        assert any(e.details.get("dry_run") is True for e in audit.items)

        # A restart of a dry run is a dry run too.
        again = await admin.post("/api/v1/jobs/restart", json={"execution_id": run})
        assert again.status_code == 202, again.text
        assert again.json()["dry_run"] is True
        await h.wait(again.json()["id"])


async def test_an_idempotency_key_of_a_dry_run_is_not_taken_for_the_real_start(
    tmp_path: Path,
) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "Dry", "Tells", {"Name": "Tells", "max_concurrent": 0}, script_text=TELLS)
    async for h in running_harness(make_settings(tmp_path)):
        admin = await h.admin()
        key = {"Idempotency-Key": "deploy-42"}
        body = {"job_id": "Dry/Tells", "dry_run": True}
        dry = await admin.post("/api/v1/jobs/start", json=body, headers=key)
        assert dry.status_code == 202, dry.text
        again = await admin.post("/api/v1/jobs/start", json=body, headers=key)
        assert again.json()["id"] == dry.json()["id"]
        real = await admin.post("/api/v1/jobs/start", json={"job_id": "Dry/Tells"}, headers=key)
        assert real.status_code in (409, 422), real.text
        assert "was first used for another request" in real.json()["error"]["message"]
        await h.wait(dry.json()["id"])


def make_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO items (name) VALUES ('one')")
    db.close()


async def test_the_maintenance_examples_change_nothing_in_a_dry_run(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / f"shop-2020010{n}T000000Z.sqlite3.gz" for n in range(1, 4)]
    for path in old:
        path.write_bytes(b"old")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"x" * 2000)
    settings = make_settings(tmp_path, apps_roots=[APPS])
    async for h in running_harness(settings):
        admin = await h.admin()
        backup = await admin.post(
            "/api/v1/jobs/start",
            json={
                "job_id": "Maintenance/DatabaseBackup",
                "variables": {
                    "Source": str(tmp_path / "shop.db"),
                    "Destination": str(backups),
                    "Keep": 2,
                },
                "dry_run": True,
            },
        )
        assert backup.status_code == 202, backup.text
        done = await h.wait(backup.json()["id"])
        assert done.status.value == "succeeded", done.error
        assert sorted(backups.iterdir()) == old  # nothing written, nothing deleted
        assert done.result["dry_run"] is True
        assert done.result["would_delete"] == [str(old[1]), str(old[0])]

        rotation = await admin.post(
            "/api/v1/jobs/start",
            json={
                "job_id": "Maintenance/LogRotation",
                "variables": {"Folder": str(logs), "MaxBytes": 1000},
                "dry_run": True,
            },
        )
        assert rotation.status_code == 202, rotation.text
        done = await h.wait(rotation.json()["id"])
        assert done.status.value == "succeeded", done.error
        assert sorted(p.name for p in logs.iterdir()) == ["app.log"]
        assert (logs / "app.log").stat().st_size == 2000
        assert done.result["dry_run"] is True
        assert done.result["rotated"] == ["app.log"]


def test_the_local_cli_runs_a_dry_run(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "Dry", "Tells", {"Name": "Tells"}, script_text=TELLS)
    base = [sys.executable, "-m", "jobhost", "--apps", str(apps), "--data-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "JOBHOST_SERVER"}
    ran = subprocess.run(
        [*base, "run", "Dry/Tells", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert "env 1 sdk True" in ran.stdout
    history = subprocess.run(
        [*base, "history", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert [e["dry_run"] for e in json.loads(history.stdout)] == [True]

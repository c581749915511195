"""What the catalog and ``jobhost validate`` tell before anything runs: schedules that would
fail, channels that do not exist, what an invalid job.json declares; and the shipped
examples, whose schedules must not fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jobhost.catalog.discovery import scan
from tests.examples_support import APPS, run_init
from tests.jobfolders import write_job
from tests.serverfixtures import Harness, harness_fixture
from tests.test_cli_local import cli_env, jobhost_argv


def _scheduled_with_required(root: Path) -> None:
    write_job(
        root,
        "Ops",
        "Backup",
        {
            "Name": "Backup",
            "default_schedule": "30 2 * * *",
            "template_variables": {"Source": {"type": "string", "required": True}},
            "notify": [{"on": ["failed"], "channel": "pager"}],
        },
    )


def test_validate_warns_of_a_schedule_missing_a_variable_and_of_an_unknown_channel(
    tmp_path: Path,
) -> None:
    apps = tmp_path / "apps"
    _scheduled_with_required(apps)
    config = tmp_path / "jobhost.toml"
    config.write_text('[channels.ops]\ntype = "log"\n', encoding="utf-8")
    result = subprocess.run(
        [*jobhost_argv(), "--apps", str(apps), "--data-dir", str(tmp_path / "data"), "validate"],
        cwd=tmp_path,
        env=cli_env(tmp_path, JOBHOST_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert (
        "warning: default_schedule '30 2 * * *' fails at every fire: the required variable "
        "Source has no default; give it a default, or set it for the schedule (jobhost "
        "schedule set Ops/Backup --var Source=...)"
    ) in text
    assert (
        "warning: notify[0] names the channel 'pager', which this server does not configure "
        "(configured: ops); add it under 'channels' in the configuration, or fix the name"
    ) in text


def test_the_catalog_carries_the_schedule_warning(tmp_path: Path) -> None:
    _scheduled_with_required(tmp_path)
    [job] = scan([tmp_path]).values()
    assert any("fails at every fire" in warning for warning in job.to_api()["warnings"])


def test_an_invalid_job_still_shows_what_its_job_json_declares(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        "Ops",
        "Nightly",
        {
            "Name": "Nightly copy",
            "Description": "Copies the shop database",
            "default_schedule": "0 3 * * *",
            "timeout_seconds": -5,
            "roles_start": ["ops"],
            "template_variables": {"Target": "where to copy to"},
        },
    )
    [job] = scan([tmp_path]).values()
    shown = job.to_api()
    assert shown["valid"] is False
    assert "timeout_seconds must be a positive number, got -5" in shown["errors"][0]
    assert (shown["name"], shown["description"], shown["schedule"]) == (
        "Nightly copy",
        "Copies the shop database",
        "0 3 * * *",
    )
    assert shown["declared"]["variables"] == [
        {"name": "Target", "description": "where to copy to", "required": True, "secret": False}
    ]
    assert shown["declared"]["roles"] == {"start": ["ops"]}


def test_no_shipped_example_has_a_schedule_that_fails_before_it_runs() -> None:
    scheduled = [job for job in scan([APPS]).values() if job.to_api()["schedule"]]
    assert "Monitoring/HealthCheck" in {job.id for job in scheduled}
    for job in scheduled:
        assert job.valid, job.errors
        assert job.advice() == [], job.id
        outcome = run_init(job.folder, {})
        assert outcome.returncode == 0, f"{job.id}: {outcome.message}"


__all__ = ["harness_fixture"]


async def test_health_check_defaults_pass_against_a_jobhost_healthz(harness: Harness) -> None:
    # The default names make run's address; its expected text is in JobHost's answer.
    [default] = [
        spec.default
        for job in scan([APPS]).values()
        if job.id == "Monitoring/HealthCheck" and job.definition is not None
        for spec in job.definition.template_variables.values()
        if spec.name == "Urls"
    ]
    assert default == 'http://127.0.0.1:8080/healthz|"status":"ok"'
    answer = await (await harness.admin()).get("/healthz")
    assert '"status":"ok"' in answer.text

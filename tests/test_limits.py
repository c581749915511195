"""``limits`` and ``run_as`` in job.json and app.json, and the settings' defaults under them."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import load_definition
from jobhost.catalog.discovery import rescan, scan
from jobhost.catalog.templates import Rendered
from jobhost.config import Settings
from jobhost.execution.launch import Launcher
from jobhost.models import Execution, ExecutionStatus, LaunchSpec, ResourceLimits, RunAs, Trigger
from tests.jobfolders import touch_later, write_job


def errors_of(**fields: Any) -> list[str]:
    _, errors, _ = load_definition({"ScriptRelativePath": "run.py", **fields}, "Demo/job.json")
    return errors


def test_limits_in_every_accepted_form() -> None:
    definition, errors, _ = load_definition(
        {
            "ScriptRelativePath": "run.py",
            "limits": {
                "memory_max": "512M",
                "cpu_quota": "150%",
                "cpu_weight": 50,
                "pids_max": 64,
                "nice": 10,
                "open_files": 1024,
                "max_runtime": "2h",
            },
            "run_as": {"user": "backup", "group": "staff", "umask": "027"},
        },
        "Demo/job.json",
    )
    assert errors == []
    assert definition is not None
    assert definition.limits is not None
    assert definition.limits.resources() == ResourceLimits(
        memory_max_bytes=512 * 1024 * 1024,
        cpu_quota_percent=150.0,
        cpu_weight=50,
        pids_max=64,
        nice=10,
        open_files=1024,
    )
    assert definition.limits.max_runtime == 7200
    assert definition.run_as is not None
    assert definition.run_as.spec() == RunAs("backup", "staff", 0o027)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"memory_max": "12X"},
            "limits.memory_max must be a size such as '512M' or '2G', got '12X'",
        ),
        ({"memory_max": "10K"}, "limits.memory_max must be at least 1M, got '10K'"),
        (
            {"memory_max": True},
            "limits.memory_max must be a number or a string such as '512M', got True",
        ),
        (
            {"cpu_quota": "fast"},
            "limits.cpu_quota must be a percentage of one CPU such as '150%', got 'fast'",
        ),
        ({"cpu_quota": 0}, "limits.cpu_quota must be between 1% and 100000% of one CPU, got 0"),
        ({"cpu_weight": 0}, "limits.cpu_weight must be between 1 and 10000"),
        ({"pids_max": "3"}, 'limits.pids_max must be an integer, got "3"'),
        ({"pids_max": 0}, "limits.pids_max must be at least 1 (the job's own process), got 0"),
        ({"nice": 40}, "limits.nice must be between -20 and 19, got 40"),
        ({"open_files": 3}, "limits.open_files must be at least 16"),
        ({"max_runtime": "soon"}, "limits.max_runtime must be seconds, or a duration such as"),
        ({"max_runtime": -1}, "limits.max_runtime must be a positive duration, got -1"),
        ({"memory": "1G"}, "limits.memory is not a known field"),
        ({"memory_max": "2P"}, "limits.memory_max must be at most 1P, got '2P'"),
        ({"max_runtime": "400d"}, "limits.max_runtime must be at most a year (31536000 s)"),
        ({"pids_max": 10**9}, "limits.pids_max must be at most 4194304"),
        ({"open_files": 10**9}, "limits.open_files must be at most 1048576"),
    ],
)
def test_a_bad_limit_is_named_with_its_value(limits: dict[str, Any], message: str) -> None:
    errors = errors_of(limits=limits)
    assert len(errors) == 1
    assert errors[0].startswith(f"Demo/job.json: {message}"), errors


def test_max_runtime_and_timeout_seconds_must_agree() -> None:
    assert errors_of(timeout_seconds=30, limits={"max_runtime": "1m"}) == [
        "Demo/job.json: limits.max_runtime (60 s) contradicts timeout_seconds (30 s): "
        "both are the run's time limit; keep only one"
    ]
    assert errors_of(timeout_seconds=60, limits={"max_runtime": "1m"}) == []


@pytest.mark.parametrize(
    ("run_as", "message"),
    [
        (
            {"user": "nobody", "umask": 27},
            "run_as.umask must be an octal string such as '027', got 27",
        ),
        ({"user": "no body"}, "run_as.user must be a Unix account name"),
        ({"group": "staff"}, "run_as.user is required"),
        (5, "run_as "),
    ],
)
def test_a_bad_run_as_is_named(run_as: Any, message: str) -> None:
    errors = errors_of(run_as=run_as)
    assert len(errors) == 1
    assert errors[0].startswith(f"Demo/job.json: {message}"), errors


def test_app_json_run_as_applies_to_jobs_without_their_own(tmp_path: Path) -> None:
    write_job(tmp_path, "Shared", "Plain")
    write_job(tmp_path, "Shared", "Own", {"Name": "Own", "run_as": "backup"})
    (tmp_path / "Shared" / "app.json").write_text('{"run_as": {"user": "svc", "umask": "077"}}')
    catalog = scan([tmp_path])
    plain, own = catalog["Shared/Plain"].definition, catalog["Shared/Own"].definition
    assert plain is not None
    assert plain.run_as is not None
    assert plain.run_as.spec() == RunAs("svc", None, 0o077)
    assert own is not None
    assert own.run_as is not None
    assert own.run_as.user == "backup"


def test_a_bad_app_json_makes_its_jobs_invalid_with_the_reason(tmp_path: Path) -> None:
    write_job(tmp_path, "Shared", "Plain")
    app_json = tmp_path / "Shared" / "app.json"
    app_json.write_text('{"run_as": {"user": "svc"}, "colour": "blue"}')
    job = scan([tmp_path])["Shared/Plain"]
    assert not job.valid
    assert job.errors == (
        f"{tmp_path.name}/Shared/app.json: colour is not a known app.json field (only run_as is)",
    )
    app_json.write_text('{"run_as": "svc"}')
    touch_later(app_json)
    assert rescan(scan([tmp_path]), [tmp_path], [app_json])["Shared/Plain"].valid


def launch_limits(
    tmp_path: Path, settings_limits: dict[str, Any], job: dict[str, Any]
) -> LaunchSpec:
    write_job(tmp_path / "apps", "Demo", "Job", {"Name": "Job", **job})
    settings = Settings(
        apps_roots=[tmp_path / "apps"], data_dir=tmp_path / "data", limits=settings_limits
    )
    entry = scan(settings.apps_roots)["Demo/Job"]
    assert entry.valid, entry.errors
    spec = Launcher(settings).spec(
        entry,
        Execution(
            id="e1",
            job_id="Demo/Job",
            status=ExecutionStatus.QUEUED,
            trigger=Trigger.CLI,
            user=None,
        ),
        Rendered(name="Job", description="", argv_extra=[], env={}),
        {},
        frozenset(),
    )
    return spec


def test_settings_limits_are_defaults_under_each_jobs_own(tmp_path: Path) -> None:
    spec = launch_limits(
        tmp_path,
        {"memory_max": "1G", "pids_max": 100, "max_runtime": "10m"},
        {"limits": {"memory_max": "256M"}},
    )
    assert spec.limits == ResourceLimits(memory_max_bytes=256 * 1024 * 1024, pids_max=100)
    assert spec.timeout_seconds == 600
    assert spec.run_as is None


def test_timeout_seconds_still_wins_over_the_default_max_runtime(tmp_path: Path) -> None:
    spec = launch_limits(tmp_path, {"max_runtime": 600}, {"timeout_seconds": 5})
    assert spec.timeout_seconds == 5


def test_bad_settings_limits_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="must be a size such as '512M' or '2G', got 'lots'"):
        Settings(limits={"memory_max": "lots"})


def test_a_launch_spec_for_a_worker_survives_its_dict_form() -> None:
    spec = LaunchSpec(
        execution_id="e",
        job_id="A/B",
        argv=["true"],
        cwd=os.getcwd(),
        env={},
        log_path="l",
        result_path="r",
        limits=ResourceLimits(memory_max_bytes=1 << 20),
        run_as=RunAs("nobody"),
    )
    assert LaunchSpec(**asdict(spec)) == spec

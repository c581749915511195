"""One request or one job folder never breaks the server: unusable variable values are
refused before anything is stored, a stored row always reads, hostile job.json files
make only their own job invalid, and variable patterns match in linear time."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import load_definition
from jobhost.catalog.discovery import rescan, scan
from jobhost.models import Execution, ExecutionStatus, Trigger
from tests.jobfolders import write_job
from tests.serverfixtures import Harness, make_settings, running_harness
from tests.test_cli_local import cli_env, jobhost_argv

OPEN_JOB = {
    "Name": "Open",
    "Description": "anyone may start it",
    "max_concurrent": 0,
    "template_variables": {"V": {"type": "string", "required": False}},
}
REDOS_JOB = {
    "Name": "Redos",
    "Description": "a pattern that backtracks exponentially in a backtracking engine",
    "template_variables": {"A": {"type": "string", "pattern": "^(a+)+$"}},
}


@pytest.fixture(name="hostile")
async def hostile_fixture(tmp_path: Path, db_url: str) -> AsyncIterator[Harness]:
    apps = tmp_path / "apps"
    write_job(apps, "T", "Open", OPEN_JOB)
    write_job(apps, "T", "Redos", REDOS_JOB)
    async for harness in running_harness(make_settings(tmp_path, database_url=db_url)):
        yield harness


@pytest.mark.parametrize(
    ("value", "reason"),
    [("\ud800", "lone UTF-16 surrogate"), ("nul\u0000byte", "NUL character")],
)
async def test_unusable_values_are_422_naming_the_variable_and_nothing_is_stored(
    hostile: Harness, value: str, reason: str
) -> None:
    admin = await hostile.admin()
    body = json.dumps({"job_id": "T/Open", "variables": {"V": value}})  # ascii: \\ud800 escapes
    response = await admin.post(
        "/api/v1/jobs/start", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith("Variables rejected: V contains a ")
    assert reason in error["message"]
    assert set(error["details"]) == {"V"}
    history = await admin.get("/api/v1/jobs/history")
    assert history.status_code == 200
    assert history.json()["executions"] == []
    assert (await admin.get("/healthz")).status_code == 200


async def test_an_unusable_variable_name_is_refused_with_an_escaped_name(hostile: Harness) -> None:
    admin = await hostile.admin()
    body = json.dumps({"job_id": "T/Open", "variables": {"\ud800": "x"}})
    response = await admin.post(
        "/api/v1/jobs/start", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "Unknown variable '\\ud800'" in response.json()["error"]["message"]


async def test_a_stored_row_holding_a_lone_surrogate_still_reads(hostile: Harness) -> None:
    engine = hostile.engine
    # JSON columns hold "\ud800" escaped, so such a row can be stored (text columns cannot).
    execution = Execution(
        id="0" * 32,
        job_id="T/Open",
        status=ExecutionStatus.FAILED,
        trigger=Trigger.USER,
        user="admin",
        variables={"V": "bad\ud800value"},
        error="failed",
        result={"k": "r\udfffs"},
        created_at=engine.clock(),
        ended_at=engine.clock(),
    )
    await engine.journal.record(execution)
    admin = await hostile.admin()
    for path in (
        "/api/v1/jobs/history",
        "/api/v1/jobs/history?job_id=T/Open",
        f"/api/v1/jobs/status/{execution.id}",
        "/api/v1/jobs/catalog/T/Open",
    ):
        response = await admin.get(path)
        assert response.status_code == 200, (path, response.text)
    status = (await admin.get(f"/api/v1/jobs/status/{execution.id}")).json()
    assert status["variables"] == {"V": "bad\ufffdvalue"}
    assert status["result"] == {"k": "r\ufffds"}


@pytest.mark.timeout(60)
async def test_a_backtracking_pattern_is_matched_in_linear_time(hostile: Harness) -> None:
    admin = await hostile.admin()
    # A backtracking engine needs about 2**40 steps to refuse this; RE2 needs 41.
    response = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "T/Redos", "variables": {"A": "a" * 40 + "!"}}
    )
    assert response.status_code == 422, response.text
    assert "A must match the pattern '^(a+)+$'" in response.json()["error"]["message"]
    accepted = await admin.post(
        "/api/v1/jobs/start", json={"job_id": "T/Redos", "variables": {"A": "a" * 40}}
    )
    assert accepted.status_code == 202, accepted.text


def _errors(data: dict[str, Any]) -> list[str]:
    definition, errors, _ = load_definition({"ScriptRelativePath": "run.py", **data}, "job.json")
    assert definition is None, data
    return errors


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", r"(?=a)a", r"(?<!x)y", r"a++"], ids=["backref", "ahead", "behind", "poss"]
)
def test_patterns_the_linear_engine_cannot_take_are_invalid(pattern: str) -> None:
    errors = _errors({"template_variables": {"A": {"pattern": pattern}}})
    assert len(errors) == 1
    assert errors[0].startswith("job.json: template_variables.A.pattern ")
    assert "RE2 syntax" in errors[0] or "not a valid regular expression" in errors[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timeout_seconds": "10"}, 'timeout_seconds must be a number, got "10"'),
        ({"timeout_seconds": float("inf")}, "timeout_seconds must be a finite number"),
        ({"stop_grace_seconds": 1e12}, "stop_grace_seconds must be at most 86400"),
        ({"max_concurrent": 10**30}, "max_concurrent must be at most 100000"),
        ({"max_concurrent": "2"}, "max_concurrent must be an integer"),
        ({"restart_burst": 2.5}, "restart_burst must be an integer"),
        (
            {"template_variables": {"C": {"required": True, "choices": []}}},
            "template_variables.C choices is empty, so no value could ever pass",
        ),
        ({"template_variables": {"N": {"type": "integer", "max": "9"}}}, "max must be a number"),
    ],
)
def test_strict_numbers_name_the_field(data: dict[str, Any], message: str) -> None:
    errors = _errors(data)
    assert any(message in error for error in errors), errors


def test_the_seed_number_forms_stay_valid() -> None:
    definition, errors, _ = load_definition(
        {
            "ScriptRelativePath": "run.py",
            "timeout_seconds": 10,
            "stop_grace_seconds": 2.5,
            "max_concurrent": 0,
            "template_variables": {"N": {"type": "integer", "min": 1, "max": 9.5}},
        },
        "job.json",
    )
    assert errors == []
    assert definition is not None
    assert definition.timeout_seconds == 10


HOSTILE_FILES = {
    "Deep": ("[" * 100_000) + ("]" * 100_000),
    "DeepInField": '{"ScriptRelativePath": "run.py", "x": ' + "{" * 100_000 + "}" * 100_000 + "}",
    "BigInt": '{"ScriptRelativePath": "run.py", "timeout_seconds": ' + "9" * 5000 + "}",
    "BigIntExtra": '{"ScriptRelativePath": "run.py", "junk": ' + "1" * 5000 + "}",
}


def test_hostile_job_json_makes_only_that_job_invalid(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "App", "Good")
    for name, text in HOSTILE_FILES.items():
        write_job(apps, "App", name, text)
    catalog = scan([apps])
    assert catalog["App/Good"].valid
    deep = catalog["App/Deep"].errors
    assert deep == (
        "apps/App/jobs/Deep/job.json: nested deeper than 64 levels of arrays "
        "and objects (at byte 64); no job.json field needs that",
    )
    assert "nested deeper than 64 levels" in catalog["App/DeepInField"].errors[0]
    for name in ("BigInt", "BigIntExtra"):
        (error,) = catalog[f"App/{name}"].errors
        assert "holds a number written with 5000 characters" in error
        assert "limited to 100" in error


def test_digits_inside_strings_and_ordinary_nesting_are_fine(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(
        apps,
        "App",
        "Fine",
        {"Description": "9" * 5000 + "[" * 200, "env": {"A": "{" * 300}, "max_concurrent": 3},
    )
    job = scan([apps])["App/Fine"]
    assert job.valid, job.errors


def test_a_hostile_file_dropped_into_a_watched_catalog_leaves_other_changes_working(
    tmp_path: Path,
) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "App", "Good")
    catalog = scan([apps])
    write_job(apps, "App", "Deep", HOSTILE_FILES["Deep"])
    write_job(apps, "App", "Later")
    updated = rescan(catalog, [apps], [apps / "App" / "jobs" / "Deep", apps / "App" / "jobs"])
    assert not updated["App/Deep"].valid
    assert updated["App/Later"].valid
    write_job(apps, "App", "Third")
    again = rescan(updated, [apps], [apps / "App" / "jobs" / "Third"])
    assert again["App/Third"].valid


async def test_serve_starts_and_reload_answers_with_a_hostile_folder(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "App", "Good")
    write_job(apps, "App", "BigInt", HOSTILE_FILES["BigInt"])
    async for harness in running_harness(make_settings(tmp_path)):
        admin = await harness.admin()
        write_job(apps, "App", "Deep", HOSTILE_FILES["Deep"])
        write_job(apps, "App", "New")
        reload = await admin.post("/api/v1/jobs/reload")
        assert reload.status_code == 200, reload.text
        new = await admin.get("/api/v1/jobs/catalog/App/New")
        assert new.status_code == 200
        deep = (await admin.get("/api/v1/jobs/catalog/App/Deep")).json()
        assert "nested deeper than 64 levels" in json.dumps(deep)


def test_validate_reports_hostile_files_and_exits_3(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "App", "Good")
    write_job(apps, "App", "Deep", HOSTILE_FILES["Deep"])
    write_job(apps, "App", "BigInt", HOSTILE_FILES["BigInt"])
    result = subprocess.run(
        [*jobhost_argv(), "--apps", str(apps), "validate"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "nested deeper than 64 levels" in result.stdout
    assert "holds a number written with 5000 characters" in result.stdout

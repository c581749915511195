"""job.json model: seed compatibility, additions, and messages naming file, field and reason."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import (
    JobDefinition,
    command_for,
    load_definition,
    parse_job_id,
    validate_cron,
)
from jobhost.errors import BadRequest, InvalidDefinition
from jobhost.models import Action

SOURCE = "apps/Backup/jobs/Nightly/job.json"

SEED_COLLECT_METRICS: dict[str, Any] = {
    "Name": "System Metrics Collection",
    "Description": "Collects CPU, memory and disk at {{Interval}} second intervals",
    "default_schedule": "*/5 * * * *",
    "ScriptRelativePath": "CollectMetrics.ps1",
    "argumentlist": [],
    "roles_start": ["admin", "metrics_viewer"],
    "roles_stop": ["admin"],
    "roles_restart": ["admin"],
    "template_variables": {"Interval": "Interval in seconds between metric collections"},
}


def load(data: Any) -> tuple[JobDefinition | None, list[str], list[str]]:
    return load_definition(data, SOURCE)


def errors_of(**fields: Any) -> list[str]:
    definition, errors, _ = load({"ScriptRelativePath": "run.py", **fields})
    assert definition is None
    return errors


def test_seed_job_json_is_valid_as_is() -> None:
    definition, errors, warnings = load(SEED_COLLECT_METRICS)
    assert errors == []
    assert warnings == []
    assert definition is not None
    spec = definition.template_variables["Interval"]
    assert (spec.name, spec.type, spec.required) == ("Interval", "string", True)
    assert spec.description == "Interval in seconds between metric collections"
    assert definition.roles_for(Action.START) == ["admin", "metrics_viewer"]
    assert definition.roles_for(Action.VIEW) is None
    assert definition.roles_for(Action.SCHEDULE) is None


def test_defaults_of_the_additions() -> None:
    definition, _, _ = load({"ScriptRelativePath": "run.py"})
    assert definition is not None
    assert definition.max_concurrent == 1
    assert definition.on_conflict == "reject"
    assert definition.restart == "never"
    assert definition.stop_grace_seconds == 10
    assert definition.restart_burst == 5
    assert definition.restart_window_seconds == 60
    assert definition.restart_max_backoff_seconds == 300
    assert definition.misfire_grace_seconds == 60
    assert definition.enabled is True
    assert definition.timeout_seconds is None
    assert definition.roles_start == []
    assert definition.roles_view is None


def test_rich_variable_spec() -> None:
    definition, errors, _ = load(
        {
            "ScriptRelativePath": "run.py",
            "template_variables": {
                "Interval": {"type": "integer", "default": "30", "min": 1, "max": 3600},
                "Mode": {"choices": ["fast", "slow"], "default": "fast"},
                "Token": {"secret": True, "required": False},
                "Verbose": {"type": "boolean", "default": "yes"},
            },
        }
    )
    assert errors == []
    assert definition is not None
    variables = definition.template_variables
    assert variables["Interval"].default == 30  # coerced at load
    assert variables["Interval"].required is False  # a default makes it optional
    assert variables["Mode"].choices == ["fast", "slow"]
    assert variables["Token"].secret
    assert not variables["Token"].required
    assert variables["Verbose"].default is True


def test_the_documented_message_shape() -> None:
    assert errors_of(timeout_seconds=-5) == [
        f"{SOURCE}: timeout_seconds must be a positive number, got -5"
    ]


def test_all_problems_of_one_file_are_reported_together() -> None:
    errors = errors_of(
        timeout_seconds=0,
        max_concurrent="many",
        on_conflict="explode",
        default_schedule="61 * * * *",
        timezone="Mars/Olympus",
        stop_grace_seconds=-1,
    )
    assert len(errors) == 6
    assert all(error.startswith(f"{SOURCE}: ") for error in errors)
    text = "\n".join(errors)
    assert 'max_concurrent must be an integer, got "many"' in text
    assert "on_conflict must be one of 'reject', 'queue' or 'replace', got \"explode\"" in text
    assert "default_schedule invalid cron expression '61 * * * *'" in text
    assert "timezone must be an IANA time zone" in text
    assert "'Mars/Olympus'" in text
    assert "stop_grace_seconds must be zero or more, got -1" in text


def test_script_relative_path_is_required() -> None:
    _, errors, _ = load({"Name": "x"})
    assert errors == [f"{SOURCE}: ScriptRelativePath is required"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../../etc/passwd", "must stay inside the job folder"),
        ("sub/../../x.py", "must stay inside the job folder"),
        ("/etc/passwd", "must be relative to the job folder"),
        ("C:\\x.ps1", "must be relative to the job folder"),
        ("", "must name the job's script"),
    ],
)
def test_script_path_must_stay_inside(path: str, reason: str) -> None:
    _, errors, _ = load({"ScriptRelativePath": path})
    assert len(errors) == 1
    assert f"{SOURCE}: ScriptRelativePath {reason}" in errors[0]


def test_not_an_object() -> None:
    assert load([1, 2]) == (None, [f"{SOURCE}: must hold a JSON object, got an array"], [])


def test_unknown_fields_are_kept_with_a_warning() -> None:
    definition, errors, warnings = load({"ScriptRelativePath": "run.py", "timout_seconds": 5})
    assert errors == []
    assert definition is not None
    assert definition.model_extra == {"timout_seconds": 5}
    assert warnings == [
        f"{SOURCE}: unknown field 'timout_seconds' is kept but not used (check its spelling)"
    ]


def test_template_reference_to_an_undeclared_variable() -> None:
    errors = errors_of(
        Name="Backup of {{Target}}",
        argumentlist=["--to", "{{Dest}}", "{{Target}}"],
        env={"WHERE": "{{Place}}"},
        template_variables={"Target": "what to back up"},
    )
    assert errors == [
        f"{SOURCE}: argumentlist[1] refers to undeclared variable {{{{Dest}}}}; "
        "declare it in template_variables",
        f"{SOURCE}: env.WHERE refers to undeclared variable {{{{Place}}}}; "
        "declare it in template_variables",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pattern": "("}, "template_variables.X.pattern is not a valid regular expression"),
        ({"type": "integer", "default": "abc"}, "template_variables.X default must be an integer"),
        ({"type": "date"}, "template_variables.X.type must be one of"),
        ({"requird": True}, "template_variables.X.requird is not a known field"),
        ({"min": 5, "max": 1}, "template_variables.X min (5) is greater than max (1)"),
        ({"choices": ["a"], "default": "b"}, "template_variables.X default must be one of a"),
        (42, "template_variables.X"),
    ],
)
def test_bad_variable_specs(spec: Any, message: str) -> None:
    errors = errors_of(template_variables={"X": spec})
    assert len(errors) == 1
    assert message in errors[0]


def test_bad_variable_name() -> None:
    errors = errors_of(template_variables={"my var": "x"})
    assert "variable name 'my var' must be letters, digits and '_'" in errors[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBHOST_USER": "x"}, "env key 'JOBHOST_USER' must not start with JOBHOST_"),
        ({"1BAD": "x"}, "env key '1BAD' is not a valid environment variable name"),
        ({"A": 5}, "env.A must be a string, got 5"),
    ],
)
def test_env_rules(env: dict[str, Any], message: str) -> None:
    errors = errors_of(env=env)
    assert errors == [f"{SOURCE}: {message}"] or message in errors[0]


def test_blank_schedule_means_none() -> None:
    definition, _, _ = load({"ScriptRelativePath": "run.py", "default_schedule": ""})
    assert definition is not None
    assert definition.default_schedule is None


@pytest.mark.parametrize(
    "expr",
    [
        "*/5 * * * *",
        "0 3 * * mon-fri",
        "*/5 * * * * 30",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
    ],
)
def test_valid_cron(expr: str) -> None:
    assert validate_cron(expr) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "has 4 fields; expected 5"),
        ("* * * * * * 2030", "has 7 fields"),
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("@reboot", "unknown cron macro '@reboot'"),
        ("  ", "cron expression is empty"),
    ],
)
def test_invalid_cron(expr: str, message: str) -> None:
    problem = validate_cron(expr)
    assert problem is not None
    assert message in problem


@pytest.mark.parametrize("job_id", ["Backup/Nightly", "web-host.2/Collect_Metrics-v1.0"])
def test_parse_job_id(job_id: str) -> None:
    assert parse_job_id(job_id) == tuple(job_id.split("/"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("../x", "the app may only contain letters"),
        ("a/b/c", "exactly one '/'"),
        ("/etc/passwd", "exactly one '/'"),
        ("", "exactly one '/'"),
        ("App/", "the job is empty"),
        ("App/..", "the job may only contain"),
        ("App/.hidden", "the job may only contain"),
        ("App/Jo\0b", "the job may only contain"),
        ("App/a%2Fb", "the job may only contain"),
        ("App/" + "x" * 101, "the job is longer than 100 characters"),
    ],
)
def test_bad_job_ids(text: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_job_id(text)
    assert caught.value.message.startswith(f"Invalid job ID {text!r}: ")
    assert reason in caught.value.message
    assert "expected '<App>/<Job>'" in caught.value.message


def test_command_for_known_interpreters(tmp_path: Path) -> None:
    assert command_for(tmp_path / "a.py") == [sys.executable, str(tmp_path / "a.py")]
    assert command_for(tmp_path / "a.sh") == ["bash", str(tmp_path / "a.sh")]


def test_command_for_executables(tmp_path: Path) -> None:
    binary = tmp_path / "run"
    binary.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(InvalidDefinition) as caught:
        command_for(binary)
    assert caught.value.message.startswith(
        "run: not executable, and no interpreter is known for files without an extension"
    )
    os.chmod(binary, 0o700)
    assert command_for(binary) == [str(binary)]
    other = tmp_path / "job.xyz"
    other.write_text("")
    with pytest.raises(InvalidDefinition, match=r"no interpreter is known for \.xyz"):
        command_for(other)


def test_command_for_powershell(tmp_path: Path) -> None:
    import shutil

    script = tmp_path / "job.ps1"
    if shutil.which("pwsh"):
        assert command_for(script)[:3] == ["pwsh", "-NoProfile", "-File"]
    else:
        with pytest.raises(InvalidDefinition, match=r"PowerShell \(pwsh\) is not installed"):
            command_for(script)

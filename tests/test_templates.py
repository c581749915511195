"""Variables: defaults, coercion, every problem at once, one-pass substitution, redaction."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobhost.catalog.definition import JobDefinition
from jobhost.catalog.templates import (
    apply_defaults,
    check_variables,
    redact,
    render,
    variables_env,
)
from jobhost.errors import VariableError


def definition(variables: dict[str, Any], **fields: Any) -> JobDefinition:
    return JobDefinition.model_validate(
        {"ScriptRelativePath": "run.py", "template_variables": variables, **fields}
    )


METRICS = definition(
    {
        "Interval": {"type": "integer", "min": 1, "max": 3600, "default": 60},
        "Host": {"description": "host name", "pattern": r"[a-z0-9.-]+"},
        "Mode": {"choices": ["fast", "slow"], "default": "fast"},
        "Ratio": {"type": "number", "required": False},
        "Verbose": {"type": "boolean", "default": False},
        "Password": {"secret": True, "required": False},
    },
    Name="Metrics every {{Interval}}s on {{Host}}",
    Description="{{Mode}} mode",
    argumentlist=["--host", "{{Host}}", "--verbose={{Verbose}}", "{{Ratio}}"],
    env={"TARGET": "{{Host}}:{{Interval}}"},
)


def rejected(values: dict[str, Any], job: JobDefinition = METRICS) -> VariableError:
    with pytest.raises(VariableError) as caught:
        check_variables(job, values)
    return caught.value


def test_defaults_fill_only_what_is_missing() -> None:
    values = apply_defaults(METRICS, {"Host": "db1", "Interval": 5, "Mode": None})
    assert values == {"Host": "db1", "Interval": 5, "Mode": "fast", "Verbose": False}


def test_strings_from_the_cli_are_coerced() -> None:
    values = check_variables(
        METRICS, {"Host": "db1", "Interval": "10", "Verbose": "yes", "Ratio": "0.5"}
    )
    assert values == {"Host": "db1", "Interval": 10, "Verbose": True, "Ratio": 0.5}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("YES", True), ("no", False)],
)
def test_boolean_spellings(text: str, expected: bool) -> None:
    assert check_variables(METRICS, {"Host": "h", "Verbose": text})["Verbose"] is expected


def test_the_documented_summary_message() -> None:
    error = rejected({"Host": "db1", "Interval": 5000, "Intervall": 5})
    assert error.message == (
        "Variables rejected: Interval must be at most 3600, got 5000; "
        "Unknown variable 'Intervall' (did you mean 'Interval'?)"
    )
    assert error.details == {
        "Interval": "Interval must be at most 3600, got 5000",
        "Intervall": "Unknown variable 'Intervall' (did you mean 'Interval'?)",
    }


def test_every_problem_is_collected() -> None:
    error = rejected(
        {"Interval": "ten", "Mode": "medium", "Ratio": True, "Verbose": "maybe", "Zzz": 1}
    )
    assert error.message.startswith("Variables rejected: Missing required variables: Host; ")
    assert error.details == {
        "Host": "Host is required",
        "Interval": "Interval must be an integer, got 'ten'",
        "Mode": "Mode must be one of fast, slow, got 'medium'",
        "Ratio": "Ratio must be a number, got true",
        "Verbose": "Verbose must be true or false, got 'maybe'",
        "Zzz": "Unknown variable 'Zzz'; this job declares Interval, Host, Mode, Ratio, "
        "Verbose, Password",
    }


def test_missing_required_variables_are_one_error() -> None:
    job = definition({"A": "first", "B": "second", "C": {"default": "c"}})
    error = rejected({"B": ""}, job)
    assert error.message == "Variables rejected: Missing required variables: A, B"


def test_pattern_is_a_full_match() -> None:
    error = rejected({"Host": "db1; rm -rf /"})
    assert error.details["Host"] == "Host must match the pattern '[a-z0-9.-]+', got 'db1; rm -rf /'"


def test_string_length_bounds() -> None:
    job = definition({"Code": {"min": 2, "max": 4}})
    assert rejected({"Code": "x"}, job).details["Code"] == (
        "Code must be at least 2 characters long, got 1"
    )
    assert rejected({"Code": "xxxxx"}, job).details["Code"] == (
        "Code must be at most 4 characters long, got 5"
    )
    assert check_variables(job, {"Code": "abc"}) == {"Code": "abc"}


def test_integer_rejects_fractions_and_strings_are_not_numbers() -> None:
    assert rejected({"Host": "h", "Interval": 1.5}).details["Interval"] == (
        "Interval must be an integer, got 1.5"
    )
    job = definition({"Label": "a label"})
    assert rejected({"Label": 5}, job).details["Label"] == "Label must be a string, got '5'"


def test_job_without_variables_rejects_any() -> None:
    error = rejected({"X": 1}, definition({}))
    assert error.details == {"X": "Unknown variable 'X'; this job declares no variables"}


def test_render_substitutes_string_values_only() -> None:
    values = check_variables(METRICS, apply_defaults(METRICS, {"Host": "db1"}))
    rendered = render(METRICS, values)
    assert rendered.name == "Metrics every 60s on db1"
    assert rendered.description == "fast mode"
    assert rendered.argv_extra == ["--host", "db1", "--verbose=false", ""]
    assert rendered.env == {"TARGET": "db1:60"}


@pytest.mark.parametrize(
    "hostile",
    [
        '", "roles_start": []',
        "}}{{",
        "{{Interval}}",
        "$(rm -rf /); `id` | cat > /etc/x && echo '\"'\n\r\t\\",
        "$1 $& $$ \\1 \\g<0>",
        "x" * 100_000,
        "naïve ☃ end",  # NUL is refused outright (test_hostile_input)
    ],
)
def test_hostile_values_never_change_structure(hostile: str) -> None:
    job = definition(
        {"Text": "free text", "Interval": {"type": "integer", "default": 1}},
        Name="Job {{Text}}",
        argumentlist=["--text", "{{Text}}", "{{Interval}}"],
        env={"TEXT": "<{{Text}}>"},
        roles_start=["admin"],
    )
    values = check_variables(job, apply_defaults(job, {"Text": hostile}))
    rendered = render(job, values)
    assert rendered.argv_extra == ["--text", hostile, "1"]
    assert rendered.env == {"TEXT": f"<{hostile}>"}
    assert rendered.name == f"Job {hostile}"
    assert job.roles_start == ["admin"]  # the definition itself is never touched


def test_variables_env() -> None:
    env = variables_env({"Host": "db1", "Interval": 10, "Verbose": True, "Quote": 'a"b'})
    assert json.loads(env["JOBHOST_VARIABLES"]) == {
        "Host": "db1",
        "Interval": 10,
        "Verbose": True,
        "Quote": 'a"b',
    }
    assert env["JOBHOST_VAR_Host"] == "db1"
    assert env["JOBHOST_VAR_Interval"] == "10"
    assert env["JOBHOST_VAR_Verbose"] == "true"
    assert env["JOBHOST_VAR_Quote"] == 'a"b'


def test_redact_hides_secrets_only() -> None:
    values = {"Host": "db1", "Password": "hunter2", "Extra": "kept"}
    assert redact(METRICS, values) == {"Host": "db1", "Password": "***", "Extra": "kept"}
    assert values["Password"] == "hunter2"  # a copy, not in place

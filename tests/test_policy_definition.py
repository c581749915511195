"""job.json fields of the run policies outside the execution core (``webhook``, a
variable's ``choices_from``): defaults, and messages naming file, field and reason."""

from __future__ import annotations

from typing import Any

import pytest

from jobhost.catalog.definition import load_definition

SOURCE = "apps/Web/jobs/Deploy/job.json"


def errors_of(**fields: Any) -> list[str]:
    definition, errors, _ = load_definition({"ScriptRelativePath": "run.py", **fields}, SOURCE)
    assert definition is None
    return errors


def site(**choices_from: Any) -> dict[str, Any]:
    return {"Site": {"description": "the site", "choices_from": choices_from}}


def test_defaults() -> None:
    definition, errors, warnings = load_definition(
        {
            "ScriptRelativePath": "run.py",
            "webhook": {"enabled": True},
            "template_variables": site(script="list-sites.py"),
        },
        SOURCE,
    )
    assert (errors, warnings) == ([], [])
    assert definition is not None
    assert definition.webhook is not None
    assert definition.webhook.signature is None
    assert definition.webhook.rate_per_minute == 30
    source = definition.template_variables["Site"].choices_from
    assert source is not None
    assert (source.timeout_seconds, source.cache_seconds) == (5.0, 60.0)
    bare, _, _ = load_definition({"ScriptRelativePath": "run.py"}, SOURCE)
    assert bare is not None
    assert bare.webhook is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"webhook": {"enabled": "yes"}},
            'webhook.enabled must be true or false, got "yes"',
        ),
        (
            {"webhook": {"enabled": True, "signature": "sha1"}},
            "webhook.signature must be one of 'hmac-sha256', got \"sha1\"",
        ),
        (
            {"webhook": {"enabled": True, "rate_per_minute": 0}},
            "webhook.rate_per_minute must be at least 1, got 0",
        ),
        (
            {"webhook": {"enabled": True, "secret": "x"}},
            'webhook.secret is not a known field, got "x"',
        ),
        ({"webhook": True}, "webhook must be an object, got true"),
        (
            {"template_variables": site(script="../../bin/list.py")},
            "template_variables.Site.choices_from.script must stay inside the job folder, "
            "got '../../bin/list.py'",
        ),
        (
            {"template_variables": site(script="/usr/bin/sites")},
            "template_variables.Site.choices_from.script must be relative to the job folder, "
            "got '/usr/bin/sites'",
        ),
        (
            {"template_variables": site(script="list.py", timeout_seconds=0)},
            "template_variables.Site.choices_from.timeout_seconds must be a positive number, got 0",
        ),
        (
            {"template_variables": site(script="list.py", timeout_seconds=600)},
            "template_variables.Site.choices_from.timeout_seconds must be at most 60.0, got 600",
        ),
        (
            {"template_variables": site(script="list.py", cache_seconds=-1)},
            "template_variables.Site.choices_from.cache_seconds must be zero or more, got -1",
        ),
        (
            {"template_variables": site(command="ls /srv")},
            "template_variables.Site.choices_from.script is required",
        ),
        (
            {
                "template_variables": {
                    "Site": {"choices": ["a"], "choices_from": {"script": "list.py"}}
                }
            },
            "template_variables.Site has both choices and choices_from; keep one "
            "(choices_from lists them at run time)",
        ),
        (
            {"watch": {"path": "../other-app/in/*.csv"}, "template_variables": {"File": "f"}},
            "watch.path must stay inside the app folder, got '../other-app/in/*.csv'",
        ),
        (
            {"watch": {"path": "in*/x.csv"}, "template_variables": {"File": "f"}},
            "watch.path may have wildcards in the file name only, got 'in*/x.csv'",
        ),
        (
            {"watch": {"path": "incoming/*.csv"}},
            "watch.variable 'File' is not declared in template_variables; declare it "
            "(a string) to receive the file's path",
        ),
        (
            {"watch": {"path": "in/*.csv", "debounce_seconds": -1}, "template_variables": {}},
            "watch.debounce_seconds must be zero or more, got -1",
        ),
    ],
)
def test_messages_name_the_field_and_the_fix(fields: dict[str, Any], message: str) -> None:
    assert f"{SOURCE}: {message}" in errors_of(**fields)

"""Template variables: defaults, checks, ``{{Name}}`` substitution, and their environment.

The order is the seed's: ``apply_defaults`` → the init hook → ``check_variables`` →
``render``. Substitution works on the parsed definition, in string values only
(Name, Description, argumentlist items, env values), in one regex pass: a value can
never add fields, change roles or the script, and a value that itself contains
``{{Other}}`` stays literal.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobhost.catalog.definition import TEMPLATE_REF, JobDefinition, to_text
from jobhost.errors import VariableError

REDACTED = "***"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The templatable parts of a definition with the variables substituted."""

    name: str
    description: str
    argv_extra: list[str]
    env: dict[str, str]


def apply_defaults(definition: JobDefinition, supplied: Mapping[str, Any]) -> dict[str, Any]:
    """``supplied`` plus each declared default that was not supplied (or supplied as null)."""
    values = dict(supplied)
    for name, spec in definition.template_variables.items():
        if values.get(name) is None and spec.has_default:
            values[name] = spec.default
    return values


def _is_blank(value: Any, type_: str) -> bool:
    # A form sends "" for an empty field: that is "not given", except for an optional
    # string, where "" is a legitimate value.
    return value is None or (value == "" and type_ != "string")


def unusable_text(text: str) -> str | None:
    """Why ``text`` cannot be stored, encoded or passed to a process, or None when it can."""
    if "\0" in text:
        return "contains a NUL character (\\x00), which no process argument or variable can hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone UTF-16 surrogate ({text[exc.start]!a}), which is not text "
            "and cannot be stored or passed to a process"
        )
    return None


def _shown(name: str) -> str:
    """A supplied variable name as it can be shown and stored (escaped when unusable)."""
    return name if unusable_text(name) is None else ascii(name)


def check_variables(definition: JobDefinition, values: Mapping[str, Any]) -> dict[str, Any]:
    """The coerced, checked variables; VariableError listing every problem otherwise.

    Strings are parsed for integer/number/boolean variables (``"10"`` → 10,
    ``"yes"`` → True). A required variable given as null or "" counts as missing.
    A string holding NUL or a lone surrogate is refused for every variable: it could
    be neither stored nor passed to the job's process.
    """
    specs = definition.template_variables
    checked: dict[str, Any] = {}
    problems: dict[str, str] = {}
    missing: list[str] = []
    for name, spec in specs.items():
        value = values.get(name)
        if isinstance(value, str) and (problem := unusable_text(value)) is not None:
            problems[name] = f"{name} {problem}"
            continue
        if _is_blank(value, spec.type) or (spec.required and value == ""):
            if spec.required:
                missing.append(name)
            continue
        try:
            checked[name] = spec.check(value)
        except ValueError as exc:
            problems[name] = f"{name} {exc}"
    for name in values:
        if name not in specs:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = f"; this job declares {', '.join(specs)}" if specs and not close else ""
            if not specs:
                known = "; this job declares no variables"
            problems[_shown(name)] = f"Unknown variable {name!a}{hint}{known}"
    if not missing and not problems:
        return checked
    details: dict[str, str] = {name: f"{name} is required" for name in missing}
    details.update(problems)
    parts = [f"Missing required variables: {', '.join(missing)}"] if missing else []
    parts += problems.values()
    raise VariableError(f"Variables rejected: {'; '.join(parts)}", details=details)


def substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace each ``{{Name}}`` in ``text`` in one pass; unknown names stay as written."""

    def replace(match: Any) -> str:
        name = match.group(1)
        return to_text(values[name]) if name in values else match.group(0)

    return TEMPLATE_REF.sub(replace, text)


def render(definition: JobDefinition, values: Mapping[str, Any]) -> Rendered:
    """Substitute ``values`` into Name, Description, argumentlist and env values.

    A declared variable that has no value (optional, no default) renders as "".
    """
    full = {name: None for name in definition.template_variables}
    full.update(values)
    return Rendered(
        name=substitute(definition.Name, full),
        description=substitute(definition.Description, full),
        argv_extra=[substitute(item, full) for item in definition.argumentlist],
        env={key: substitute(item, full) for key, item in definition.env.items()},
    )


def variables_env(values: Mapping[str, Any]) -> dict[str, str]:
    """``JOBHOST_VARIABLES`` (a JSON object) and one ``JOBHOST_VAR_<Name>`` per variable."""
    env = {"JOBHOST_VARIABLES": json.dumps(dict(values), ensure_ascii=False, default=str)}
    for name, value in values.items():
        env[f"JOBHOST_VAR_{name}"] = to_text(value)
    return env


def secret_values(definition: JobDefinition, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the secret variables, as text: what ``jobhost.redact`` masks."""
    specs = definition.template_variables
    found = (to_text(values.get(n)) for n, spec in specs.items() if spec.secret)
    return tuple(text for text in found if text)


def redact(definition: JobDefinition, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every secret variable replaced by ``***``: the form stored and shown."""
    specs = definition.template_variables
    return {
        name: REDACTED if name in specs and specs[name].secret else value
        for name, value in values.items()
    }

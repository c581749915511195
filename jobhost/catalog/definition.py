"""The job.json model: ``JobDefinition`` and ``VariableSpec`` (pydantic v2).

Seed field names are kept exactly (``Name``, ``ScriptRelativePath``, ``argumentlist``,
``roles_start`` …), so a seed job folder is valid as is. Everything here is pure:
reading files and checking that the script exists belong to ``discovery``; the one
exception is ``command_for``, which looks at the script it is given.

Cron convention: Vixie/Debian cron's (``jobhost.cronexpr``). Five fields, or six where
the sixth (last) field is seconds (``*/5 * * * * 30`` = at second 30 of every fifth
minute); the macros ``@hourly @daily @weekly @monthly @yearly @annually @midnight``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from jobhost import cron
from jobhost.catalog.limits import Limits, RunAsDefinition, runtime_problem
from jobhost.catalog.policies import ChainLink, RetryPolicy, policy_problems
from jobhost.catalog.triggers import ChoicesFrom, WatchDefinition, WebhookDefinition
from jobhost.errors import BadRequest, InvalidDefinition
from jobhost.models import Action

ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_ID_PART = 100
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Exactly ``{{Name}}``: no inner spaces, so ``{{ x }}`` in a description stays text.
TEMPLATE_REF = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
INIT_SCRIPT_NAMES = ("init-job.py", "init-job.sh", "init-job.ps1")
# Upper bounds for job.json numbers: generous for any real job, and far below the values
# (1e12 seconds, 10**30 runs) that overflow timers or mean "forever" by accident.
MAX_SECONDS = 366 * 24 * 3600.0
MAX_COUNT = 100_000
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def id_part_problem(part: str) -> str | None:
    """Why ``part`` cannot be an app or job folder name, or None when it can."""
    if not part:
        return "is empty"
    if len(part) > MAX_ID_PART:
        return f"is longer than {MAX_ID_PART} characters"
    if not ID_PART.fullmatch(part):
        return (
            "may only contain letters, digits, '_', '.' and '-', "
            "and must start with a letter or digit"
        )
    return None


def parse_job_id(text: str) -> tuple[str, str]:
    """Split ``<App>/<Job>``; anything else (traversal, absolute paths, NUL…) is a BadRequest."""
    parts = text.split("/") if isinstance(text, str) else []
    problem: str | None
    if len(parts) != 2:
        problem = "it must have exactly one '/' between the app and the job"
    else:
        problem = next(
            (
                f"{label} {p}"
                for label, part in zip(("the app", "the job"), parts, strict=True)
                if (p := id_part_problem(part)) is not None
            ),
            None,
        )
    if problem is not None:
        raise BadRequest(
            f"Invalid job ID {text!r}: {problem} (expected '<App>/<Job>', e.g. 'Backup/Nightly')"
        )
    return parts[0], parts[1]


def validate_cron(expr: str) -> str | None:
    """An error message for a bad cron expression, or None when it is usable (one parser
    for job.json, the API, the CLI and the scheduler: ``jobhost.cron``)."""
    problem = cron.problem(expr)
    return problem[:1].lower() + problem[1:] if problem else None


@functools.lru_cache(maxsize=8)
def _which(program: str) -> str | None:
    # Cached: a catalog scan asks once per .ps1 job; installing pwsh needs a restart.
    return shutil.which(program)


def command_for(script: Path) -> list[str]:
    """The argv that runs ``script``; InvalidDefinition when nothing can run it."""
    suffix = script.suffix.lower()
    if suffix == ".py":
        return [sys.executable, str(script)]
    if suffix == ".sh":
        return ["bash", str(script)]
    if suffix == ".ps1":
        if _which("pwsh") is None:
            raise InvalidDefinition(
                f"{script.name}: PowerShell (pwsh) is not installed; install it to run .ps1 jobs"
            )
        return ["pwsh", "-NoProfile", "-File", str(script)]
    if os.access(script, os.X_OK):
        return [str(script)]
    kind = suffix or "files without an extension"
    raise InvalidDefinition(
        f"{script.name}: not executable, and no interpreter is known for {kind} "
        f"(chmod +x it, or use .py, .sh or .ps1)"
    )


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the ValueError says it; no line on stderr


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2, whose matching time is linear in the input.

    ValueError when it is not a regular expression, or uses what RE2 cannot match in
    linear time (backreferences, lookahead/lookbehind, possessive quantifiers).
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc}), got {pattern!r}") from None
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else str(exc)
        raise ValueError(
            f"uses a construct that cannot be matched in linear time ({reason}), "
            f"got {pattern!r}; "
            "patterns follow RE2 syntax: no backreferences or lookaround"
        ) from None


def to_text(value: Any) -> str:
    """How a variable's value reads inside a string: JSON-ish for non-strings."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class VariableSpec(BaseModel):
    """One template variable. ``"Name": "text"`` (seed form) means a required string."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str
    description: str = ""
    type: Literal["string", "integer", "number", "boolean"] = "string"
    default: Any = None
    required: bool = None  # type: ignore[assignment]  # resolved in _resolve: default present?
    pattern: str | None = None
    choices: list[Any] | None = None
    min_value: float | None = Field(default=None, alias="min", strict=True, allow_inf_nan=False)
    max_value: float | None = Field(default=None, alias="max", strict=True, allow_inf_nan=False)
    secret: bool = False
    choices_from: ChoicesFrom | None = None  # choices listed by a script (catalog.choices)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not VARIABLE_NAME.fullmatch(value):
            raise ValueError(
                f"variable name {value!r} must be letters, digits and '_', "
                "not starting with a digit"
            )
        return value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)
        return value

    @model_validator(mode="after")
    def _resolve(self) -> VariableSpec:
        if self.required is None:
            object.__setattr__(self, "required", self.default is None)
        low, high = self.min_value, self.max_value
        if low is not None and high is not None and low > high:
            raise ValueError(f"min ({self.min_value:g}) is greater than max ({self.max_value:g})")
        if self.choices is not None and self.choices_from is not None:
            raise ValueError(
                "has both choices and choices_from; keep one (choices_from lists them at run time)"
            )
        if self.choices is not None:
            if not self.choices:
                raise ValueError(
                    "choices is empty, so no value could ever pass; "
                    "list the allowed values or remove choices"
                )
            try:
                coerced = [self.check(choice, in_choices=False) for choice in self.choices]
            except ValueError as exc:
                raise ValueError(f"choices: each {exc}") from None
            object.__setattr__(self, "choices", coerced)
        if self.default is not None:
            try:
                object.__setattr__(self, "default", self.check(self.default))
            except ValueError as exc:
                raise ValueError(f"default {exc}") from None
        return self

    @property
    def has_default(self) -> bool:
        return self.default is not None

    def coerce(self, value: Any) -> Any:
        """``value`` as this variable's type (strings from the CLI/forms are parsed)."""
        if self.type == "string":
            if isinstance(value, str):
                return value
            raise ValueError(f"must be a string, got {to_text(value)!r}")
        if self.type == "boolean":
            if isinstance(value, bool):
                return value
            text = value.strip().lower() if isinstance(value, str) else value
            if text in _TRUE or text == 1:
                return True
            if text in _FALSE or text == 0:
                return False
            raise ValueError(f"must be true or false, got {to_text(value)!r}")
        if isinstance(value, bool):
            raise ValueError(f"must be {self._kind()}, got {to_text(value)}")
        return self._coerce_number(value)

    def _kind(self) -> str:
        return "an integer" if self.type == "integer" else "a number"

    def _coerce_number(self, value: Any) -> int | float:
        number: int | float | None = None
        if isinstance(value, int | float):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                try:
                    number = float(value.strip())
                except ValueError:
                    number = None
        if (
            number is None
            or (isinstance(number, float) and not number == number)
            or number
            in (
                float("inf"),
                float("-inf"),
            )
        ):
            raise ValueError(f"must be {self._kind()}, got {to_text(value)!r}")
        if self.type == "integer" and isinstance(number, float):
            if not number.is_integer():
                raise ValueError(f"must be an integer, got {to_text(value)}")
            return int(number)
        return number

    def check(self, value: Any, *, in_choices: bool = True) -> Any:
        """The coerced value, or ValueError naming the first rule it breaks."""
        value = self.coerce(value)
        if self.type == "string":
            size = len(value)
            if self.min_value is not None and size < self.min_value:
                raise ValueError(f"must be at least {self.min_value:g} characters long, got {size}")
            if self.max_value is not None and size > self.max_value:
                raise ValueError(f"must be at most {self.max_value:g} characters long, got {size}")
        elif self.type in ("integer", "number"):
            if self.min_value is not None and value < self.min_value:
                raise ValueError(f"must be at least {self.min_value:g}, got {value}")
            if self.max_value is not None and value > self.max_value:
                raise ValueError(f"must be at most {self.max_value:g}, got {value}")
        text = to_text(value)
        if self.pattern is not None and not compile_pattern(self.pattern).fullmatch(text):
            raise ValueError(f"must match the pattern {self.pattern!r}, got {to_text(value)!r}")
        if in_choices and self.choices is not None and value not in self.choices:
            options = ", ".join(to_text(c) for c in self.choices)
            raise ValueError(f"must be one of {options}, got {to_text(value)!r}")
        return value


_STRICT: dict[str, Any] = {"strict": True, "allow_inf_nan": False}
_NULL_MEANS_EMPTY = ("argumentlist", "roles_start", "roles_stop", "roles_restart")
_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")


def _named_variables(value: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``Name → "description"`` and the object form, each with its ``name``."""
    named: dict[str, Any] = {}
    for key, spec in value.items():
        if isinstance(spec, str):
            named[key] = {"name": key, "description": spec}
        elif isinstance(spec, dict):
            named[key] = {**spec, "name": key}
        else:
            named[key] = spec
    return named


class JobDefinition(BaseModel):
    """A parsed job.json. Unknown fields are kept (``model_extra``) and warned about."""

    model_config = ConfigDict(extra="allow", frozen=True)

    Name: str = ""
    Description: str = ""
    default_schedule: str | None = None
    ScriptRelativePath: str
    argumentlist: list[str] = Field(default_factory=list)
    roles_start: list[str] = Field(default_factory=list)
    roles_stop: list[str] = Field(default_factory=list)
    roles_restart: list[str] = Field(default_factory=list)
    roles_view: list[str] | None = None  # None: any signed-in user
    roles_schedule: list[str] | None = None  # None: superusers only
    template_variables: dict[str, VariableSpec] = Field(default_factory=dict)
    # Numbers are strict: a string ("10") is not a number, nor are inf/NaN (1e999).
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS, **_STRICT)
    max_concurrent: int = Field(default=1, ge=0, le=MAX_COUNT, strict=True)  # 0: no limit
    on_conflict: Literal["reject", "queue", "replace"] = "reject"
    restart: Literal["never", "on-failure", "always"] = "never"
    restart_max_backoff_seconds: float = Field(default=300.0, gt=0, le=MAX_SECONDS, **_STRICT)
    restart_burst: int = Field(default=5, ge=1, le=MAX_COUNT, strict=True)
    restart_window_seconds: float = Field(default=60.0, gt=0, le=MAX_SECONDS, **_STRICT)
    stop_grace_seconds: float = Field(default=10.0, ge=0, le=24 * 3600.0, **_STRICT)
    env: dict[str, str] = Field(default_factory=dict)
    timezone: str | None = None
    queue: str | None = None
    enabled: bool = True
    # Triggers besides people and schedules (jobhost.catalog.triggers).
    webhook: WebhookDefinition | None = None  # a secret URL that starts it (jobhost.hooks)
    watch: WatchDefinition | None = None  # a file in the app folder starts it (file_triggers)
    misfire_grace_seconds: float = Field(default=60.0, ge=0, le=MAX_SECONDS, **_STRICT)
    notify: list[dict[str, Any]] = Field(default_factory=list)
    limits: Limits | None = None  # over the settings' defaults (jobhost.catalog.limits)
    run_as: RunAsDefinition | None = None  # None: the app's run_as (app.json), else the server's
    # Run policies (jobhost.catalog.policies): max_concurrent per distinct rendered key, a
    # settings-wide group semaphore, retries of batch runs, runs started on the outcome.
    concurrency_key: str | None = Field(default=None, min_length=1, max_length=200)
    concurrency_group: str | None = None
    retry: RetryPolicy | None = None
    on_success: list[ChainLink] = Field(default_factory=list)
    on_failure: list[ChainLink] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _seed_shorthands(cls, data: Any) -> Any:
        # One pass instead of a validator per field: a catalog validates thousands of these.
        if not isinstance(data, dict):
            return data
        fixes: dict[str, Any] = {}
        for key in _NULL_MEANS_EMPTY:
            # Seed files and hand-written ones use null for "none".
            if key in data and data[key] is None:
                fixes[key] = []
        schedule = data.get("default_schedule")
        if isinstance(schedule, str) and not schedule.strip():
            fixes["default_schedule"] = None  # the seed's scaffolder writes "" for "no schedule"
        variables = data.get("template_variables")
        if isinstance(variables, dict) and variables:
            fixes["template_variables"] = _named_variables(variables)
        return {**data, **fixes} if fixes else data

    @field_validator("default_schedule")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None and (problem := validate_cron(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("ScriptRelativePath")
    @classmethod
    def _check_script_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the job's script, got ''")
        if "\0" in value:
            raise ValueError(f"must not contain NUL, got {value!r}")
        if value.startswith(("/", "\\")) or _DRIVE.match(value):
            raise ValueError(f"must be relative to the job folder, got {value!r}")
        if ".." in value and ".." in _SEPARATORS.split(value):
            raise ValueError(f"must stay inside the job folder, got {value!r}")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.fullmatch(key):
                raise ValueError(f"key {key!r} is not a valid environment variable name")
            if key.upper().startswith("JOBHOST_"):
                raise ValueError(f"key {key!r} must not start with JOBHOST_ (reserved for JobHost)")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"must be an IANA time zone such as 'Europe/Paris' or 'UTC', got {value!r}"
                ) from None
        return value

    def roles_for(self, action: Action) -> list[str] | None:
        """The ``roles_<action>`` list; None when that optional field is absent."""
        return {
            Action.VIEW: self.roles_view,
            Action.START: self.roles_start,
            Action.STOP: self.roles_stop,
            Action.RESTART: self.roles_restart,
            Action.SCHEDULE: self.roles_schedule,
        }[action]

    def template_problems(self) -> list[str]:
        """References to undeclared variables, one message per field."""
        # Labels are built only for texts that hold "{{": most fields hold no reference.
        fields: list[tuple[str, str]] = [("Name", self.Name), ("Description", self.Description)]
        fields += [
            (f"argumentlist[{i}]", item) for i, item in enumerate(self.argumentlist) if "{{" in item
        ]
        fields += [(f"env.{key}", item) for key, item in self.env.items() if "{{" in item]
        problems = []
        for label, text in fields:
            if "{{" not in text:  # the common case, without running the regex
                continue
            unknown = sorted(
                {m for m in TEMPLATE_REF.findall(text) if m not in self.template_variables}
            )
            if unknown:
                names = ", ".join("{{" + name + "}}" for name in unknown)
                problems.append(
                    f"{label} refers to undeclared variable {names}; "
                    "declare it in template_variables"
                )
        return problems


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _error_message(error: ErrorDetails) -> str:
    """One pydantic error as ``field reason, got value``."""
    loc = ".".join(str(part) for part in error["loc"]) or "job.json"
    kind, ctx, got = error["type"], error.get("ctx", {}), _describe(error.get("input"))
    if kind == "missing":
        return f"{loc} is required"
    if kind == "value_error":
        return f"{loc} {ctx.get('error', error['msg'])!s}"
    reasons = {
        "greater_than": "must be a positive number"
        if ctx.get("gt") == 0
        else f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": "must be zero or more"
        if ctx.get("ge") == 0
        else f"must be at least {ctx.get('ge')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "finite_number": "must be a finite number",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "extra_forbidden": "is not a known field",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
    }
    if kind in reasons:
        reason = reasons[kind]
    elif kind.startswith("int_"):
        reason = "must be an integer"
    elif kind.startswith("float_"):
        reason = "must be a number"
    else:
        reason = error["msg"][:1].lower() + error["msg"][1:]
    return f"{loc} {reason}, got {got}"


def load_definition(data: Any, source: str) -> tuple[JobDefinition | None, list[str], list[str]]:
    """Validate parsed job.json ``data``: (definition or None, errors, warnings).

    Every message starts with ``source`` (the file's display path); all problems are
    collected, not only the first.
    """
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        return None, [f"{source}: must hold a JSON object, got {kind}"], []
    try:
        definition = JobDefinition.model_validate(data)
    except ValidationError as exc:
        return None, [f"{source}: {_error_message(e)}" for e in exc.errors()], []
    return _checked(definition, source)


def load_definition_json(
    raw: bytes, source: str
) -> tuple[JobDefinition | None, list[str], list[str]] | None:
    """``load_definition`` straight from job.json's bytes, or None when they do not validate.

    The fast path of a scan (no intermediate dict); on None, decode the bytes with
    ``json`` and call ``load_definition``, whose messages name the JSON error or every
    field problem.
    """
    try:
        definition = JobDefinition.model_validate_json(raw)
    except ValidationError:
        return None
    return _checked(definition, source)


def _checked(
    definition: JobDefinition, source: str
) -> tuple[JobDefinition | None, list[str], list[str]]:
    """The checks that span fields, and the unknown-field warnings."""
    problems = definition.template_problems()
    if (runtime := runtime_problem(definition.timeout_seconds, definition.limits)) is not None:
        problems.append(runtime)
    if definition.watch is not None and (
        watched := definition.watch.problem(definition.template_variables)
    ):
        problems.append(watched)
    if definition.notify:  # most jobs have none: skip the import and the rule models
        # Imported here: jobhost.notify's package pulls in the engine side, which needs this module.
        from jobhost.notify.rules import notify_problems

        problems += notify_problems(definition.notify)
    problems += policy_problems(definition)
    errors = [f"{source}: {problem}" for problem in problems] if problems else []
    extra = definition.model_extra
    warnings = (
        [
            f"{source}: unknown field {key!r} is kept but not used (check its spelling)"
            for key in extra
        ]
        if extra
        else []
    )
    warnings += [f"{source}: {warning}" for warning in _secret_argument_warnings(definition)]
    return (None if errors else definition), errors, warnings


def _secret_argument_warnings(definition: JobDefinition) -> list[str]:
    """A secret on the command line is readable by every local user (ps, /proc/<pid>/cmdline)."""
    secret = {name for name, spec in definition.template_variables.items() if spec.secret}
    if not secret:
        return []
    warnings = []
    for index, item in enumerate(definition.argumentlist):
        for name in sorted(secret.intersection(TEMPLATE_REF.findall(item))):
            warnings.append(
                f"argumentlist[{index}] puts the secret variable {{{{{name}}}}} on the command "
                "line, where any local user can read it (ps, /proc/<pid>/cmdline); pass it in "
                f"env instead, or read JOBHOST_VAR_{name}"
            )
    return warnings

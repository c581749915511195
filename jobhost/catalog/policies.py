"""The run-policy fields of job.json: ``retry``, ``on_success`` / ``on_failure`` links and
the checks that span them (``concurrency_key`` references, retry beside ``restart``).

Pure values and checks; what they do at run time is in ``jobhost.execution.retry``,
``jobhost.execution.concurrency`` and ``jobhost.chains``. Chain cycles span jobs, so they
are refused over the whole catalog (``jobhost.catalog.chaingraph``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from jobhost.catalog.definition import JobDefinition

MAX_ATTEMPTS = 100
MAX_DELAY_SECONDS = 366 * 24 * 3600.0
_STRICT: Any = {"strict": True, "allow_inf_nan": False}
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# ``{{Name}}`` (this run's variable) or ``{{result}}`` / ``{{result.a.b}}`` (its result).
CHAIN_REF = re.compile(r"\{\{(result(?:\.[A-Za-z0-9_-]+)*|[A-Za-z_][A-Za-z0-9_]*)\}\}")
VARIABLE_REF = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
RetryOn = Literal["failed", "timed_out", "lost"]


class RetryPolicy(BaseModel):
    """``"retry"``: up to ``attempts`` runs in all (the first included), each after an
    exponential backoff with jitter; only for the outcomes in ``on``, and for ``failed``
    only with an exit code in ``on_exit_codes`` when that list is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS, strict=True)
    backoff_seconds: float = Field(default=10.0, ge=0, le=MAX_DELAY_SECONDS, **_STRICT)
    max_backoff_seconds: float = Field(default=300.0, gt=0, le=MAX_DELAY_SECONDS, **_STRICT)
    on_exit_codes: tuple[int, ...] = ()
    on: tuple[RetryOn, ...] = Field(default=("failed", "timed_out", "lost"), min_length=1)

    @field_validator("on_exit_codes")
    @classmethod
    def _exit_codes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for code in value:
            if isinstance(code, bool) or not 1 <= code <= 255:
                raise ValueError(f"must hold exit codes from 1 to 255, got {code!r}")
        return value

    @model_validator(mode="after")
    def _backoff_within_max(self) -> RetryPolicy:
        if self.backoff_seconds > self.max_backoff_seconds:
            raise ValueError(
                f"backoff_seconds ({self.backoff_seconds:g}) must not exceed "
                f"max_backoff_seconds ({self.max_backoff_seconds:g})"
            )
        return self


class ChainLink(BaseModel):
    """One entry of ``on_success`` / ``on_failure``: the job to start and its variables
    (``{{Name}}`` from this run's variables, ``{{result.path}}`` from its result)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str = Field(max_length=201)
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("job")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not _JOB_ID.fullmatch(value):
            raise ValueError(
                f"must be a job ID '<App>/<Job>' (e.g. 'Reports/Daily'), got {value!r}"
            )
        return value


def policy_problems(definition: JobDefinition) -> list[str]:
    """The run-policy checks that span fields: undeclared ``{{Name}}`` references in
    ``concurrency_key`` and chain variables, a group name, ``retry`` beside ``restart``."""
    declared = definition.template_variables
    problems: list[str] = []
    key = definition.concurrency_key
    if key is not None:
        unknown = sorted({n for n in VARIABLE_REF.findall(key) if n not in declared})
        if unknown:
            names = ", ".join("{{" + n + "}}" for n in unknown)
            problems.append(
                f"concurrency_key refers to undeclared variable {names}; "
                "declare it in template_variables"
            )
    group = definition.concurrency_group
    if group is not None and not GROUP_NAME.fullmatch(group):
        problems.append(
            "concurrency_group must be a name of letters, digits, '_', '.' and '-' "
            f"(e.g. 'db-heavy'), got {group!r}"
        )
    if definition.retry is not None and definition.restart != "never":
        problems.append(
            f"retry is for batch jobs, but restart is {definition.restart!r}: a restarted "
            "daemon keeps its own restart rules; remove one of the two"
        )
    for field in ("on_success", "on_failure"):
        links: list[ChainLink] = getattr(definition, field)
        for index, link in enumerate(links):
            for name, value in link.variables.items():
                if not isinstance(value, str):
                    continue
                refs = CHAIN_REF.findall(value)
                unknown = sorted(
                    {r for r in refs if "." not in r and r != "result"} - set(declared)
                )
                if unknown:
                    names = ", ".join("{{" + n + "}}" for n in unknown)
                    problems.append(
                        f"{field}[{index}].variables.{name} refers to undeclared variable "
                        f"{names}; use a variable of this job or {{{{result.<path>}}}}"
                    )
                secret = sorted({r for r in refs if r in declared and declared[r].secret})
                if secret:
                    names = ", ".join("{{" + n + "}}" for n in secret)
                    problems.append(
                        f"{field}[{index}].variables.{name} refers to the secret variable "
                        f"{names}; secret values are not kept, so a chain cannot pass them on"
                    )
    return problems

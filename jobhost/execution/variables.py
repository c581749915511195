"""A run's variables: resolved for a new run (defaults → init hook → checks), reused
from an earlier run for a restart, and which of them are secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobhost.catalog.definition import JobDefinition
from jobhost.catalog.discovery import Job
from jobhost.catalog.templates import apply_defaults, check_variables
from jobhost.errors import VariableError
from jobhost.execution.choices import ChoiceLists
from jobhost.execution.init_hook import run_init_hook
from jobhost.execution.launch import base_env
from jobhost.models import Execution


def secret_names(definition: JobDefinition | None) -> list[str]:
    """The variables declared ``secret`` (their values are never stored)."""
    if definition is None:
        return []
    return [name for name, spec in definition.template_variables.items() if spec.secret]


async def resolve_variables(
    job: Job,
    supplied: Mapping[str, Any],
    init_timeout_seconds: float,
    choices: ChoiceLists | None = None,
) -> dict[str, Any]:
    """Defaults → init hook → required/unknown/type checks (the seed's order); the
    choices a ``choices_from`` script lists (``choices``) are checked as static ones."""
    definition = job.definition
    assert definition is not None
    values = apply_defaults(definition, supplied)
    if job.init_script is not None:
        values = await run_init_hook(job, values, timeout=init_timeout_seconds, env=base_env())
    if choices is not None:
        definition = await choices.definition(job)
    return check_variables(definition, values)


def reusable_variables(job: Job, previous: Execution | None) -> dict[str, Any]:
    """The variables of ``previous`` for a restart; refused when some were secret (their
    values were not kept, so the caller must give them again)."""
    if previous is None:
        return {}
    secret = [name for name in secret_names(job.definition) if name in previous.variables]
    if secret:
        raise VariableError(
            f"Cannot reuse the variables of {previous.id!r}: {', '.join(secret)} "
            "are secret and not kept; give them again",
            details={name: "secret value not kept; give it again" for name in secret},
        )
    return dict(previous.variables)

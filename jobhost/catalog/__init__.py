"""The catalog: job folders discovered, validated and kept as an immutable snapshot.

Names load on first use: importing one submodule (``jobhost.config`` needs
``jobhost.catalog.limits``) does not import the whole catalog with it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "JobDefinition": "jobhost.catalog.definition",
    "VariableSpec": "jobhost.catalog.definition",
    "command_for": "jobhost.catalog.definition",
    "parse_job_id": "jobhost.catalog.definition",
    "validate_cron": "jobhost.catalog.definition",
    "Catalog": "jobhost.catalog.discovery",
    "Job": "jobhost.catalog.discovery",
    "rescan": "jobhost.catalog.discovery",
    "scan": "jobhost.catalog.discovery",
    "Rendered": "jobhost.catalog.templates",
    "apply_defaults": "jobhost.catalog.templates",
    "check_variables": "jobhost.catalog.templates",
    "redact": "jobhost.catalog.templates",
    "render": "jobhost.catalog.templates",
    "variables_env": "jobhost.catalog.templates",
    "watch_catalog": "jobhost.catalog.watch",
}

__all__ = [
    "Catalog",
    "Job",
    "JobDefinition",
    "Rendered",
    "VariableSpec",
    "apply_defaults",
    "check_variables",
    "command_for",
    "parse_job_id",
    "redact",
    "render",
    "rescan",
    "scan",
    "validate_cron",
    "variables_env",
    "watch_catalog",
]

if TYPE_CHECKING:
    from jobhost.catalog.definition import (
        JobDefinition,
        VariableSpec,
        command_for,
        parse_job_id,
        validate_cron,
    )
    from jobhost.catalog.discovery import Catalog, Job, rescan, scan
    from jobhost.catalog.templates import (
        Rendered,
        apply_defaults,
        check_variables,
        redact,
        render,
        variables_env,
    )
    from jobhost.catalog.watch import watch_catalog


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobhost.catalog' has no attribute {name!r}")
    return getattr(import_module(module), name)

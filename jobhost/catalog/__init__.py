"""The catalog: job folders discovered, validated and kept as an immutable snapshot."""

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

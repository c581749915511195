"""JobHost: a job host for web applications.

The public API, grouped. Names load on first use, so ``import jobhost.job`` inside a job
script stays as cheap as the standard library (nothing below is imported by it).

- The engine: ``JobHost``, ``Settings``.
- Definitions: ``JobDefinition``, ``VariableSpec``, ``Job``, ``Catalog``.
- Executions: ``Execution``, ``ExecutionStatus``, ``Trigger``, ``Action``, ``Principal``,
  ``HistoryQuery``, ``OutputChunk``.
- Errors: ``JobHostError`` and its subclasses in ``jobhost.errors``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "JobHost": "jobhost.engine",
    "Settings": "jobhost.config",
    "JobDefinition": "jobhost.catalog.definition",
    "VariableSpec": "jobhost.catalog.definition",
    "Job": "jobhost.catalog.discovery",
    "Catalog": "jobhost.catalog.discovery",
    "Execution": "jobhost.models",
    "ExecutionStatus": "jobhost.models",
    "Trigger": "jobhost.models",
    "Action": "jobhost.models",
    "Principal": "jobhost.models",
    "HistoryQuery": "jobhost.models",
    "OutputChunk": "jobhost.models",
    "JobHostError": "jobhost.errors",
}

__all__ = [
    "Action",
    "Catalog",
    "Execution",
    "ExecutionStatus",
    "HistoryQuery",
    "Job",
    "JobDefinition",
    "JobHost",
    "JobHostError",
    "OutputChunk",
    "Principal",
    "Settings",
    "Trigger",
    "VariableSpec",
]

if TYPE_CHECKING:
    from jobhost.catalog.definition import JobDefinition, VariableSpec
    from jobhost.catalog.discovery import Catalog, Job
    from jobhost.config import Settings
    from jobhost.engine import JobHost
    from jobhost.errors import JobHostError
    from jobhost.models import (
        Action,
        Execution,
        ExecutionStatus,
        HistoryQuery,
        OutputChunk,
        Principal,
        Trigger,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobhost' has no attribute {name!r}")
    return getattr(import_module(module), name)

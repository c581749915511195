"""Turn a job, its checked variables and an execution into the exact process to run.

The child's environment is built from an allow-list of the host's variables plus the
contract's ``JOBHOST_*`` variables and the job's own ``env``: the host's secrets
(database URLs, admin passwords, tokens) are never inherited by job scripts.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobhost.catalog.definition import command_for
from jobhost.catalog.discovery import Job
from jobhost.catalog.templates import Rendered, variables_env
from jobhost.config import Settings
from jobhost.models import Execution, LaunchSpec

INHERITED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR")


def base_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of the host's environment a job may see: locale, PATH, HOME and the like."""
    if source is None:
        return dict(_host_env())
    env = {name: source[name] for name in INHERITED_ENV if name in source}
    env.update({name: value for name, value in source.items() if name.startswith("LC_")})
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"  # output should reach the log as it is printed
    return env


@functools.cache
def _host_env() -> dict[str, str]:
    # Read once: the host's environment does not change under a running server, and
    # walking os.environ on every start is a measurable part of dispatch.
    return base_env(dict(os.environ))


@functools.cache
def _resolved(folder: Path) -> str:
    return str(folder.resolve())


def log_path(settings: Settings, execution_id: str) -> Path:
    return settings.logs_dir / f"{execution_id}.log"


def result_path(settings: Settings, execution_id: str) -> Path:
    return settings.logs_dir / f"{execution_id}.result.json"


def state_dir(settings: Settings, job_id: str) -> Path:
    app, name = job_id.split("/", 1)
    return settings.state_dir / app / name


def _ensure_state_dir(settings: Settings, job_id: str) -> str:
    """The job's state folder as an absolute path, created when missing."""
    folder = os.path.join(_resolved(settings.state_dir), *job_id.split("/", 1))
    os.makedirs(folder, exist_ok=True)
    return folder


def contract_env(
    settings: Settings,
    job: Job,
    execution: Execution,
    variables: Mapping[str, Any],
    roles: frozenset[str],
) -> dict[str, str]:
    """The ``JOBHOST_*`` variables of the job-script contract (DESIGN.md)."""
    env = {
        "JOBHOST_EXECUTION_ID": execution.id,
        "JOBHOST_JOB_ID": job.id,
        "JOBHOST_USER": execution.user or "",
        "JOBHOST_ROLES": ",".join(sorted(roles)),
        "JOBHOST_TEST": "1" if execution.test else "0",
        "JOBHOST_RESULT_PATH": os.path.join(
            _resolved(settings.logs_dir), f"{execution.id}.result.json"
        ),
        "JOBHOST_STATE_DIR": _ensure_state_dir(settings, job.id),
        "JOBHOST_DATA_DIR": _resolved(settings.data_dir),
    }
    env.update(variables_env(dict(variables)))
    return env


def build_spec(
    settings: Settings,
    job: Job,
    execution: Execution,
    rendered: Rendered,
    variables: Mapping[str, Any],
    roles: frozenset[str],
) -> LaunchSpec:
    """The launch spec; creates the job's state folder when missing (the engine creates
    the logs folder when it opens)."""
    definition = job.definition
    assert definition is not None
    assert job.script is not None
    argv = [*command_for(job.script), *rendered.argv_extra]
    if execution.test:
        argv.append("--test")
    env = base_env()
    env.update(rendered.env)
    env.update(contract_env(settings, job, execution, variables, roles))
    return LaunchSpec(
        execution_id=execution.id,
        job_id=job.id,
        argv=[str(part) for part in argv],
        cwd=str(job.folder),
        env=env,
        log_path=os.path.join(_resolved(settings.logs_dir), f"{execution.id}.log"),
        result_path=env["JOBHOST_RESULT_PATH"],
        timeout_seconds=definition.timeout_seconds,
        stop_grace_seconds=definition.stop_grace_seconds,
        max_output_bytes=settings.max_output_bytes,
        queue=definition.queue,
    )

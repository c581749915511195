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

from jobhost.catalog.definition import JobDefinition, command_for
from jobhost.catalog.discovery import Job
from jobhost.catalog.templates import Rendered, secret_values, variables_env
from jobhost.config import Settings
from jobhost.models import Execution, LaunchSpec, ResourceLimits

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


def log_path(settings: Settings, execution_id: str) -> Path:
    return settings.logs_dir / f"{execution_id}.log"


def result_path(settings: Settings, execution_id: str) -> Path:
    return settings.logs_dir / f"{execution_id}.result.json"


def state_dir(settings: Settings, job_id: str) -> Path:
    app, name = job_id.split("/", 1)
    return settings.state_dir / app / name


class Launcher:
    """Builds launch specs for one host's settings.

    Dispatch is hot: the host's folders are resolved to strings once, and each job's
    folder and script once per catalog snapshot of the job (a reload makes a new ``Job``),
    instead of building and resolving ``Path`` objects on every start.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.logs_dir = str(settings.logs_dir.resolve())
        self.state_dir = str(settings.state_dir.resolve())
        self.data_dir = str(settings.data_dir.resolve())
        self._jobs: dict[str, tuple[Job, str, Path, str]] = {}
        self._default_limits: ResourceLimits | None = None

    def log_path(self, execution_id: str) -> str:
        return os.path.join(self.logs_dir, f"{execution_id}.log")

    def timeout(self, definition: JobDefinition) -> float | None:
        """The run's time limit: ``timeout_seconds``, ``limits.max_runtime``, the settings'."""
        if definition.timeout_seconds is not None:
            return definition.timeout_seconds
        if definition.limits is not None and definition.limits.max_runtime is not None:
            return definition.limits.max_runtime
        return self.settings.limits.max_runtime

    def result_path(self, execution_id: str) -> str:
        return os.path.join(self.logs_dir, f"{execution_id}.result.json")

    def _job_paths(self, job: Job) -> tuple[str, Path, str]:
        """The job's folder, script and state folder (the latter created when missing)."""
        cached = self._jobs.get(job.id)
        if cached is None or cached[0] is not job:
            assert job.script is not None
            state = os.path.join(self.state_dir, *job.id.split("/", 1))
            cached = (job, str(job.folder), job.script, state)
            self._jobs[job.id] = cached
        _, folder, script, state = cached
        if not os.path.isdir(state):  # one stat per start; makedirs would cost three syscalls
            os.makedirs(state, exist_ok=True)
        return folder, script, state

    def contract_env(
        self,
        job: Job,
        execution: Execution,
        variables: Mapping[str, Any],
        roles: frozenset[str],
        state: str,
    ) -> dict[str, str]:
        """The ``JOBHOST_*`` variables of the job-script contract (DESIGN.md)."""
        env = {
            "JOBHOST_EXECUTION_ID": execution.id,
            "JOBHOST_JOB_ID": job.id,
            "JOBHOST_USER": execution.user or "",
            "JOBHOST_ROLES": ",".join(sorted(roles)),
            "JOBHOST_TEST": "1" if execution.test else "0",
            "JOBHOST_DRY_RUN": "1" if execution.dry_run else "0",
            "JOBHOST_RESULT_PATH": self.result_path(execution.id),
            "JOBHOST_STATE_DIR": state,
            "JOBHOST_DATA_DIR": self.data_dir,
        }
        env.update(variables_env(dict(variables)))
        return env

    def spec(
        self,
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
        folder, script, state = self._job_paths(job)
        # Asked on every start: whether the script is executable may change under us.
        argv = [*command_for(script), *rendered.argv_extra]
        if execution.test:
            argv.append("--test")
        env = base_env()
        env.update(rendered.env)
        env.update(self.contract_env(job, execution, variables, roles, state))
        return LaunchSpec(
            execution_id=execution.id,
            job_id=job.id,
            argv=[str(part) for part in argv],
            cwd=folder,
            env=env,
            log_path=self.log_path(execution.id),
            result_path=env["JOBHOST_RESULT_PATH"],
            timeout_seconds=self.timeout(definition),
            stop_grace_seconds=definition.stop_grace_seconds,
            max_output_bytes=self.settings.max_output_bytes,
            queue=definition.queue,
            secrets=secret_values(definition, variables),  # redact: masked in the output
            limits=self._limits(definition),
            run_as=None if definition.run_as is None else definition.run_as.spec(),
        )

    def _limits(self, definition: JobDefinition) -> ResourceLimits:
        defaults = self.settings.limits
        if definition.limits is None:
            if self._default_limits is None:  # computed once: most jobs set no limits
                self._default_limits = defaults.resources()
            return self._default_limits
        return definition.limits.over(defaults).resources()


def build_spec(
    settings: Settings,
    job: Job,
    execution: Execution,
    rendered: Rendered,
    variables: Mapping[str, Any],
    roles: frozenset[str],
) -> LaunchSpec:
    """The launch spec (one-off form of ``Launcher.spec``)."""
    return Launcher(settings).spec(job, execution, rendered, variables, roles)

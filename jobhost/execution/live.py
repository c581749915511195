"""The runs not yet ended, in memory: indexed by job, with what launched them. (Who
holds a slot and who waits is ``concurrency.Slots``.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobhost.catalog.discovery import Job
from jobhost.execution.variables import secret_names
from jobhost.models import Execution


@dataclass(frozen=True, slots=True)
class Launch:
    """What the engine resolved for one run: the job and its checked variables."""

    job: Job
    variables: dict[str, Any]  # the real values (secrets included), kept in memory only
    rendered: Any  # catalog.templates.Rendered
    roles: frozenset[str]
    # An adopted run's secret values, as the executor kept them (its variables are redacted).
    secrets: tuple[str, ...] = ()
    # Worked out once: every record of the run is masked with them.
    _secret_values: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_secret_values", self._find_secret_values())

    def _find_secret_values(self) -> tuple[str, ...]:
        if self.job.definition is None:
            return ()
        if self.secrets:
            return self.secrets
        values = (self.variables.get(name) for name in secret_names(self.job.definition))
        return tuple(str(v) for v in values if v not in (None, ""))

    def secret_values(self) -> list[str]:
        """The clear values of the run's secret variables; kept in memory only."""
        return list(self._secret_values)


class LiveRuns:
    """Live runs by ID (``runs``) and their launches, indexed by job."""

    def __init__(self) -> None:
        self.runs: dict[str, Execution] = {}
        self.launches: dict[str, Launch] = {}
        self._by_job: dict[str, dict[str, None]] = {}  # job ID → its live execution IDs

    def add(self, execution: Execution, launch: Launch | None) -> None:
        self.runs[execution.id] = execution
        self._by_job.setdefault(execution.job_id, {})[execution.id] = None
        if launch is not None:
            self.launches[execution.id] = launch

    def unindex(self, execution: Execution) -> None:
        """No longer live (its launch stays until ``forget``: hooks may still ask for its
        secret values)."""
        self.runs.pop(execution.id, None)
        of_job = self._by_job.get(execution.job_id)
        if of_job is not None:
            of_job.pop(execution.id, None)
            if not of_job:
                del self._by_job[execution.job_id]

    def forget(self, execution: Execution) -> None:
        """Drop every trace of the run."""
        self.unindex(execution)
        self.launches.pop(execution.id, None)

    def active_of(self, job_id: str) -> list[Execution]:
        """The job's runs that hold (or are getting) a process; test runs do not count."""
        live = (self.runs[i] for i in self._by_job.get(job_id, ()))
        return [e for e in live if e.status.active and not e.test]

    def secret_values(self, execution_id: str) -> list[str]:
        launch = self.launches.get(execution_id)
        return launch.secret_values() if launch is not None else []

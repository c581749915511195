"""The runs not yet ended, in memory: indexed by job, with what launched them and the
jobs' queues, and the counts admission needs (``Occupancy``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from jobhost.catalog.discovery import Job
from jobhost.execution.admission import Occupancy
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

    def secret_values(self) -> list[str]:
        """The clear values of the run's secret variables; kept in memory only."""
        if self.job.definition is None:
            return []
        if self.secrets:
            return list(self.secrets)
        values = (self.variables.get(name) for name in secret_names(self.job.definition))
        return [str(v) for v in values if v not in (None, "")]


class LiveRuns:
    """Live runs by ID (``runs``), their launches, and each job's queue of waiting IDs."""

    def __init__(self, *, max_queue: int) -> None:
        self.max_queue = max_queue  # waiting runs across all jobs
        self.runs: dict[str, Execution] = {}
        self.launches: dict[str, Launch] = {}
        self.queues: dict[str, deque[str]] = {}
        self._by_job: dict[str, dict[str, None]] = {}  # job ID → its live execution IDs

    def add(self, execution: Execution, launch: Launch | None, *, queued: bool = False) -> None:
        self.runs[execution.id] = execution
        self._by_job.setdefault(execution.job_id, {})[execution.id] = None
        if launch is not None:
            self.launches[execution.id] = launch
        if queued:
            self.queues.setdefault(execution.job_id, deque()).append(execution.id)

    def unindex(self, execution: Execution) -> None:
        """No longer live (its launch stays until ``forget``: hooks may still ask for its
        secret values)."""
        self.runs.pop(execution.id, None)
        of_job = self._by_job.get(execution.job_id)
        if of_job is not None:
            of_job.pop(execution.id, None)
            if not of_job:
                del self._by_job[execution.job_id]

    def unqueue(self, execution: Execution) -> None:
        queue = self.queues.get(execution.job_id)
        if queue and execution.id in queue:
            queue.remove(execution.id)

    def forget(self, execution: Execution) -> None:
        """Drop every trace of the run."""
        self.unindex(execution)
        self.unqueue(execution)
        self.launches.pop(execution.id, None)

    def active_of(self, job_id: str) -> list[Execution]:
        """The job's runs that hold (or are getting) a process; test runs do not count."""
        live = (self.runs[i] for i in self._by_job.get(job_id, ()))
        return [e for e in live if e.status.active and not e.test]

    def queued_total(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def occupancy(self, job_id: str) -> Occupancy:
        """What holds or waits for the job's slots now (the input of ``admit``)."""
        return Occupancy(
            active=tuple(e.id for e in self.active_of(job_id)),
            queued=len(self.queues.get(job_id, ())),
            queued_total=self.queued_total(),
            max_queue=self.max_queue,
        )

    def secret_values(self, execution_id: str) -> list[str]:
        launch = self.launches.get(execution_id)
        return launch.secret_values() if launch is not None else []

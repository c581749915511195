"""Admission: may a new run start now, wait in the queue, or not run at all?

A pure function over small typed values: the job's policy and the request
(``Admission``), and what is active and waiting right now (``Occupancy``). The
supervisor gathers those, asks ``admit``, and acts on the answer; nothing here touches
the event loop, the store or a process, so every rule is testable in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobhost.catalog.definition import JobDefinition

OnConflict = Literal["reject", "queue", "replace"]


@dataclass(frozen=True, slots=True)
class Policy:
    """A job's concurrency rule: at most ``max_concurrent`` active runs (0: no limit);
    past it, ``on_conflict`` says whether a new run is refused, queued, or queued while
    the active ones are stopped (``replace``)."""

    max_concurrent: int = 0
    on_conflict: OnConflict = "queue"

    @classmethod
    def of(cls, definition: JobDefinition) -> Policy:
        return cls(definition.max_concurrent, definition.on_conflict)


UNLIMITED = Policy()


@dataclass(frozen=True, slots=True)
class Admission:
    """One request to run a job. Test runs ignore ``max_concurrent`` and groups."""

    job_id: str
    policy: Policy
    test: bool = False
    key: str | None = None  # the rendered concurrency_key: max_concurrent counts per key
    group: str | None = None  # the concurrency_group, a semaphore shared across jobs

    @property
    def limited(self) -> bool:
        """Whether the answer depends on what is active (else: start, whatever runs)."""
        return not self.test and (self.policy.max_concurrent > 0 or self.group is not None)


@dataclass(frozen=True, slots=True)
class Occupancy:
    """What holds a slot now: the IDs of the job's active (non-test) runs (of the same
    concurrency key), how many of its runs wait in its queue, and the queue length across
    all jobs against its cap; for a run in a group, the group's holders and its limit."""

    active: tuple[str, ...] = ()
    queued: int = 0
    queued_total: int = 0
    max_queue: int = 0
    group_active: int = 0
    group_limit: int = 0  # 0: the group has no limit in settings


FREE = Occupancy()


@dataclass(frozen=True, slots=True)
class Start:
    """Dispatch now."""


@dataclass(frozen=True, slots=True)
class Queue:
    """Wait; ``position`` 1 is next in the job's queue. ``replace``: the active runs to
    stop so that this one takes their place."""

    position: int
    replace: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Not run. ``full``: the global queue is at its cap (try later), else a conflict
    with the ``running`` runs under ``on_conflict = reject``."""

    reason: str
    running: tuple[str, ...] = ()
    full: bool = False


Decision = Start | Queue | Reject
START = Start()


def admit(request: Admission, occupancy: Occupancy) -> Decision:
    """Start, queue at a position, or reject with the reason a caller is shown."""
    if not request.limited:
        return START
    policy = request.policy
    limit = policy.max_concurrent
    job_free = not limit or len(occupancy.active) + occupancy.queued < limit
    group_free = not occupancy.group_limit or occupancy.group_active < occupancy.group_limit
    if job_free and group_free:
        return START
    # A full group always queues: on_conflict is about the job's own runs.
    if not job_free and policy.on_conflict == "reject":
        running = ", ".join(occupancy.active) or "queued runs"
        key = f" for concurrency_key {request.key!r}" if request.key is not None else ""
        return Reject(
            f"Job {request.job_id!r} already has {len(occupancy.active)} active execution(s)"
            f"{key} (max_concurrent={limit}, on_conflict=reject): {running}. "
            "Stop it first, or restart it.",
            running=occupancy.active,
        )
    if occupancy.queued_total >= occupancy.max_queue:
        return Reject(
            f"The queue is full ({occupancy.max_queue} waiting executions); try again later",
            full=True,
        )
    replace = occupancy.active if not job_free and policy.on_conflict == "replace" else ()
    return Queue(position=occupancy.queued + 1, replace=replace)


def may_leave_queue(policy: Policy, active: int) -> bool:
    """Whether the head of a job's queue may start, with ``active`` runs holding slots."""
    return not policy.max_concurrent or active < policy.max_concurrent

"""Reconciliation: the runs of instances whose lease expired are re-adopted or resolved.

Only runs whose owner's lease has expired are touched (runs recorded before leases
existed have no owner and count as expired); a run whose owner is alive is never
changed, stopped or killed, whoever opens the store. For each orphan:

- queued: it never ran; recorded ``lost``.
- on this host (any host for the Celery executor): ``adopt`` re-attaches to it; when
  nothing is left to attach to, a process it may have left is ended (found by pid and
  start time, or by ``JOBHOST_EXECUTION_ID`` in its environment) and it is recorded
  ``lost``, with a message naming the dead owner.
- on another host: nothing here can follow it; recorded ``lost`` naming the owner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from jobhost.abc import Executor
from jobhost.execution.journal import Journal
from jobhost.models import Execution, ExecutionStatus, Instance, Trigger, iso
from jobhost.store import instances

log = logging.getLogger(__name__)

Adopt = Callable[[Execution], Awaitable[bool]]


def owner_name(execution: Execution, owner: Instance | None) -> str:
    if owner is not None:
        return f"{owner.describe()}, whose lease expired at {iso(owner.lease_expires_at)}"
    if execution.owner is None:
        return "the JobHost process that started it (recorded before leases)"
    return f"instance {execution.owner[:8]} (no longer registered)"


async def reconcile(
    journal: Journal,
    executor: Executor,
    me: Instance,
    clock: Callable[[], datetime],
    adopt: Adopt,
    *,
    any_host: bool = False,
    announce: Callable[[Execution], None] | None = None,
    inherited: Sequence[tuple[Execution, Instance]] = (),
) -> list[Execution]:
    """Resolve every orphan (see the module docstring); returns those recorded ``lost``.
    ``inherited``: runs already made ours (``instances.take_over``), with their owner."""
    now = clock()
    orphans, owners = await journal.call(instances.orphaned_executions, journal.store, now)
    ended = []
    todo: list[tuple[Execution, Instance | None, bool]]
    todo = [(execution, owner, True) for execution, owner in inherited]
    todo += [(execution, owners.get(execution.owner or ""), False) for execution in orphans]
    for execution, owner, ours in todo:
        if execution.owner == me.id:
            continue
        if not ours and not await journal.call(
            instances.claim_orphan, journal.store, execution.id, execution.owner, me.id
        ):
            continue  # another server got there first
        who = owner_name(execution, owner)
        host = execution.host or (owner.host if owner else None)
        here = any_host or host is None or host == me.host
        if execution.status is ExecutionStatus.QUEUED:
            reason = f"Its owner, {who}, stopped while this run was queued; it never ran"
        elif here:
            if await adopt(execution):
                log.info(
                    "execution %s of %s re-adopted from %s", execution.id, execution.job_id, who
                )
                continue
            if await executor.terminate_orphan(execution):
                process = f"process {execution.pid}" if execution.pid else "process"
                reason = (
                    f"Its owner, {who}, stopped during this run; its {process} could not be "
                    "re-adopted and was ended"
                )
            else:
                reason = f"Its owner, {who}, stopped during this run; its process was already gone"
        else:
            reason = (
                f"Its owner, {who}, stopped during this run on host {host}; "
                f"this server on {me.host} cannot follow it there"
            )
        lost = execution.evolve(
            status=ExecutionStatus.LOST, ended_at=clock(), error=reason, owner=me.id
        )
        await journal.record(lost)
        if announce is not None:
            announce(lost)
        log.warning("execution %s of %s marked lost: %s", execution.id, execution.job_id, reason)
        ended.append(lost)
    await _end_ghosts(journal, executor)
    await journal.call(instances.forget_dead, journal.store, now, [me.id])
    return ended


async def _end_ghosts(journal: Journal, executor: Executor) -> None:
    """End the processes the executor holds for nobody that have no record (a server died
    between a spawn and its first commit) or whose record has ended (recorded ``lost`` by
    a server on another host): no job runs unrecorded."""
    unclaimed = getattr(executor, "unclaimed", None)  # executors with a runner have it
    if unclaimed is None:
        return
    for execution_id in await unclaimed():
        stored = await journal.call(journal.store.get_execution, execution_id)
        if stored is not None and not stored.status.terminal:
            continue  # an orphan with a record: adopted or resolved above
        # No record, or one that says the run has ended: another host recorded it lost
        # once its owner's lease expired (it could not reach this machine), so it must
        # not go on unseen here.
        ghost = Execution(
            id=execution_id,
            job_id="",
            status=ExecutionStatus.RUNNING,
            trigger=Trigger.USER,
            user=None,
        )
        ended = await executor.terminate_orphan(ghost)
        log.warning(
            "process of execution %s (%s) %s",
            execution_id,
            "no record" if stored is None else f"recorded {stored.status.value}",
            "ended" if ended else "was already gone",
        )

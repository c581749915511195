"""Start-up reconciliation: nothing stays ``running`` forever.

Runs recorded as active by a previous host process are ended as ``lost``. A process
they left behind is killed rather than re-adopted: its output pipe died with the old
host process, so it could be neither watched nor heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from jobhost.abc import Executor
from jobhost.execution.journal import Journal
from jobhost.models import Execution, ExecutionStatus

log = logging.getLogger(__name__)


async def reconcile(
    journal: Journal, executor: Executor, clock: Callable[[], datetime]
) -> list[Execution]:
    """End every recorded-active execution as ``lost``; returns them as recorded."""
    ended = []
    for execution in await journal.call(journal.store.active_executions):
        if execution.status is ExecutionStatus.QUEUED:
            reason = "JobHost restarted while this run was queued; it never ran"
        elif await executor.terminate_orphan(execution):
            process = f"process {execution.pid}" if execution.pid else "process"
            reason = f"JobHost restarted during this run; its {process} was ended"
        else:
            reason = "JobHost restarted during this run; its process was already gone"
        lost = execution.evolve(status=ExecutionStatus.LOST, ended_at=clock(), error=reason)
        await journal.record(lost)
        log.warning("execution %s of %s marked lost: %s", execution.id, execution.job_id, reason)
        ended.append(lost)
    return ended

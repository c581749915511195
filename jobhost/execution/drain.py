"""Drain, for upgrades: start nothing new, let the running runs finish up to a deadline
(or leave them to the next server), then ask the process to exit.

The engine checks permission and audits; this holds the state and the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jobhost.execution.lease import Lease
from jobhost.execution.supervisor import Supervisor

log = logging.getLogger(__name__)


class Drain:
    """Whether this instance drains, and the task that waits for its runs."""

    def __init__(self) -> None:
        self.active = False
        self.leave = False  # exit at once, leaving the runs to the next server
        self._task: asyncio.Task[None] | None = None
        # Set when a drain is over: ``jobhost serve`` then exits (0).
        self.exit_requested = asyncio.Event()

    async def begin(
        self, supervisor: Supervisor, lease: Lease | None, wait_seconds: float | None, leave: bool
    ) -> None:
        """Refuse starts from now on, cancel pending restarts, say so in the lease, and
        set ``exit_requested`` once the live runs ended or ``wait_seconds`` passed."""
        self.active, self.leave = True, leave
        for job_id in supervisor.restart_pending():
            supervisor.cancel_restart(job_id)
        await self._tell(lease)
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(
            self._finish(supervisor, None if leave else wait_seconds, leave), name="jobhost-drain"
        )

    async def end(self, lease: Lease | None) -> None:
        """Starts and schedules work again."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.active, self.leave = False, False
        await self._tell(lease)

    async def _tell(self, lease: Lease | None) -> None:
        if lease is not None:
            lease.draining = self.active
            await lease.renew()

    async def _finish(
        self, supervisor: Supervisor, wait_seconds: float | None, leave: bool
    ) -> None:
        if not leave:
            waits = [asyncio.ensure_future(supervisor.wait(i)) for i in list(supervisor.live)]
            if waits:
                _, pending = await asyncio.wait(waits, timeout=wait_seconds)
                for waiting in pending:
                    waiting.cancel()
        log.info("drain complete: exiting (%d runs still live)", len(supervisor.live))
        self.exit_requested.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

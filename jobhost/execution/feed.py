"""Changes of this server's runs, told to the other servers on a PostgreSQL store.

Each server announces the changes of its runs to its own subscribers (``/events``):
start, running, progress, ``stopping``, end. With several servers on one store, a client
connected to server B should see those of the runs server A owns as well. A listens to its
own announcements, keeps the ids of the runs it owns, and once per event-loop iteration
sends them in one ``NOTIFY`` (off the journal's write path, through the bounded database
pool); the other servers read those runs from the store and announce them to their
subscribers (``Forwarding`` listens).

Transitions are announced once committed, so the row B reads is the one announced. A
progress report is announced before its row is written (it is written with the next
batch), so the report itself travels in the notification and B lays it over the row.
Progress alone is sent at most every ``PROGRESS_SECONDS`` per server (the latest report
of each run), so a job reporting a thousand times a second costs a few notifications.
It costs nothing while no other instance holds a live lease, and nothing on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from jobhost.execution.journal import Journal
from jobhost.models import Execution, ExecutionStatus
from jobhost.store import requests

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5


class ChangeFeed:
    """Coalesces this server's run changes and NOTIFYs them (see the module docstring)."""

    def __init__(
        self, journal: Journal, me: Callable[[], str | None], enabled: Callable[[], bool]
    ) -> None:
        self._journal = journal
        self._store: Any = journal.store
        self._me = me
        self._enabled = enabled
        self._pending: dict[str, Execution] = {}
        self._statuses: dict[str, ExecutionStatus] = {}  # as last sent, for live runs
        self._soon = False  # a flush is queued for this loop iteration
        self._later: asyncio.TimerHandle | None = None  # a flush of progress alone
        self._tasks: set[asyncio.Task[None]] = set()

    def changed(self, execution: Execution) -> None:
        """An announcement of this server's (``Watchers`` listener)."""
        if execution.status.terminal:
            self._statuses.pop(execution.id, None)  # also while nobody else listens
        me = self._me()
        if me is None or execution.owner != me or not self._enabled():
            return  # not ours: a run another server changed, which it tells itself
        self._pending[execution.id] = execution
        loop = asyncio.get_running_loop()
        if self._statuses.get(execution.id) is not execution.status:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._flush)
        elif self._later is None and not self._soon:
            self._later = loop.call_later(PROGRESS_SECONDS, self._flush)

    def _flush(self) -> None:
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        changes, self._pending = list(self._pending.values()), {}
        me = self._me()
        if not changes or me is None:
            return
        for execution in changes:
            if not execution.status.terminal:
                self._statuses[execution.id] = execution.status
        task = asyncio.get_running_loop().create_task(self._send(me, changes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, me: str, changes: list[Execution]) -> None:
        ids = [execution.id for execution in changes]
        progress = {
            e.id: (e.progress, e.progress_message)
            for e in changes
            if not e.status.terminal and (e.progress is not None or e.progress_message)
        }
        try:
            await self._journal.call(requests.announce, self._store, me, ids, progress)
        except Exception:  # other servers' lists catch up on their next read
            log.exception("telling other servers about %d changed runs failed", len(ids))

    def close(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None

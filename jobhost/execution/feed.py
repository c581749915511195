"""Changes of this server's runs, told to the other servers on a PostgreSQL store.

Each server announces the transitions it records to its own subscribers (``/events``).
With several servers on one store, a client connected to server B should also see what
happens to the runs server A owns. This hook collects the ids of the runs whose start,
running or end this server recorded, and once per event-loop iteration sends them in one
``NOTIFY`` (off the journal's write path, through the bounded database pool); the other
servers read those runs from the store and announce them to their subscribers
(``Forwarding`` listens). It costs nothing while no other instance holds a live lease,
and nothing on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from jobhost.abc import Hook
from jobhost.execution.journal import Journal
from jobhost.models import Execution
from jobhost.store import requests

log = logging.getLogger(__name__)


class ChangeFeed(Hook):
    """Coalesces changed run ids and NOTIFYs them (see the module docstring)."""

    def __init__(
        self, journal: Journal, me: Callable[[], str | None], enabled: Callable[[], bool]
    ) -> None:
        self._journal = journal
        self._store: Any = journal.store
        self._me = me
        self._enabled = enabled
        self._pending: dict[str, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def execution_started(self, execution: Execution) -> None:
        self._add(execution.id)

    def execution_running(self, execution: Execution) -> None:
        self._add(execution.id)

    def execution_finished(self, execution: Execution, previous: Execution | None) -> None:
        self._add(execution.id)

    def _add(self, execution_id: str) -> None:
        if not self._enabled():
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending[execution_id] = None

    def _flush(self) -> None:
        ids, self._pending = list(self._pending), {}
        me = self._me()
        if not ids or me is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(me, ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, me: str, ids: list[str]) -> None:
        try:
            await self._journal.call(requests.announce, self._store, me, ids)
        except Exception:  # other servers' lists catch up on their next read
            log.exception("telling other servers about %d changed runs failed", len(ids))

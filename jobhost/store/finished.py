"""A bounded cache of finished executions for history pages.

A finished execution's row no longer changes (its status is terminal, its output total is
final), so a history page reads only the page's keys (ID, status, output total) in order,
and builds an ``Execution`` from a full row only for the runs it has not seen finished
before. The keys come from the store on every read, so a page never lists a run the store
does not hold, and a row that did change (other status or output total) is read again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from jobhost.models import Execution

Key = tuple[str, str, int]  # (id, status, output_bytes)


def key_of(execution: Execution) -> Key:
    return (execution.id, execution.status.value, execution.output_bytes)


class FinishedRuns:
    """Up to ``size`` finished executions by key, least recently used dropped first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._runs: OrderedDict[Key, Execution] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Execution | None:
        with self._lock:
            execution = self._runs.get(key)
            if execution is not None:
                self._runs.move_to_end(key)
            return execution

    def get_many(self, keys: Sequence[Key]) -> dict[str, Execution]:
        """The cached runs of ``keys`` by ID (one lock for a whole page)."""
        found: dict[str, Execution] = {}
        with self._lock:
            for key in keys:
                execution = self._runs.get(key)
                if execution is not None:
                    self._runs.move_to_end(key)
                    found[key[0]] = execution
        return found

    def put(self, execution: Execution) -> None:
        if not execution.status.terminal:
            return
        with self._lock:
            self._runs[key_of(execution)] = execution
            while len(self._runs) > self._size:
                self._runs.popitem(last=False)

    def refresh(self, executions: Sequence[Execution]) -> None:
        """Replace the cached copies of ``executions`` by these newer ones: a finished run
        may still gain a link (``chained``, a retry's ``next_attempt``) after it ended."""
        with self._lock:
            for execution in executions:
                key = key_of(execution)
                if key in self._runs:
                    self._runs[key] = execution

"""Rendered executions, memoised: the JSON view of an execution is built once per state.

``Execution`` values are immutable and replaced on every change, so the object itself
is the cache key: a view is reused only while the engine still hands out that very
object. ``GET /running`` with 1,000 live executions and every ``/events`` subscriber
receiving the same change then render each state once instead of once per request or
per subscriber (``to_api`` formats four timestamps; it dominated those requests).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from jobhost.models import Execution
from jobhost.server.sse import frame

VIEWS_KEPT = 4096


class ExecutionViews:
    """``to_api()`` dicts and ``execution`` SSE frames, by execution ID and identity."""

    def __init__(self, size: int = VIEWS_KEPT) -> None:
        self.size = size
        self._views: dict[str, tuple[Execution, dict[str, Any]]] = {}
        self._frames: dict[str, tuple[Execution, bytes]] = {}
        self._json: dict[str, tuple[Execution, bytes]] = {}
        self._live: dict[str, tuple[Execution, bytes, bytes]] = {}

    def api(self, execution: Execution) -> dict[str, Any]:
        """A fresh dict equal to ``execution.to_api()`` (callers may change it)."""
        entry = self._views.get(execution.id)
        if entry is None or entry[0] is not execution:
            entry = (execution, execution.to_api())
            self._keep(self._views, execution.id, entry)
        view = dict(entry[1])
        if execution.ended_at is None and execution.started_at is not None:
            view["duration_seconds"] = execution.duration_seconds  # grows while it runs
        return view

    def json(self, execution: Execution) -> bytes:
        """``execution.to_api()`` as compact UTF-8 JSON (for pages built as bytes)."""
        if execution.ended_at is None and execution.started_at is not None:
            # Its duration grows while it runs: the JSON around it is kept, in two parts.
            live = self._live.get(execution.id)
            if live is None or live[0] is not execution:
                live = (execution, *_around_duration(execution.to_api()))
                self._keep(self._live, execution.id, live)
            return live[1] + dumps(execution.duration_seconds) + live[2]
        if self._live:
            self._live.pop(execution.id, None)
        entry = self._json.get(execution.id)
        # An equal copy (a store read of a finished run) renders the same: compare first.
        if entry is None or (entry[0] is not execution and entry[0] != execution):
            entry = (execution, dumps(execution.to_api()))
            self._keep(self._json, execution.id, entry)
        return entry[1]

    def event(self, execution: Execution) -> bytes:
        """The ``execution`` event announcing this state, as sent on ``/events``."""
        entry = self._frames.get(execution.id)
        if entry is None or entry[0] is not execution:
            entry = (execution, frame("execution", execution.to_api()))
            self._keep(self._frames, execution.id, entry)
        return entry[1]

    def _keep(self, table: dict[str, Any], key: str, entry: Any) -> None:
        table.pop(key, None)
        if len(table) >= self.size:
            del table[next(iter(table))]  # the oldest: dicts keep insertion order
        table[key] = entry


def _around_duration(view: dict[str, Any]) -> tuple[bytes, bytes]:
    """The JSON of ``view`` before and after the value of its ``duration_seconds``
    (a key neither first nor last in ``to_api``)."""
    keys = list(view)
    at = keys.index("duration_seconds")
    head = dumps({k: view[k] for k in keys[:at]})[:-1]  # without its "}"
    tail = dumps({k: view[k] for k in keys[at + 1 :]})[1:]  # without its "{"
    return head + b',"duration_seconds":', b"," + tail


def dumps(value: Any) -> bytes:
    """JSON as FastAPI's responses write it: compact, UTF-8, no NaN."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def views_of(request: Request) -> ExecutionViews:
    views: ExecutionViews = request.app.state.views
    return views

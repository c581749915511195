"""Stop and restart requests for runs another server owns, and the cluster key, in SQL.

A server that is asked to stop or restart a run it does not own writes a ``run_requests``
row; the run's owner consumes the rows for the runs it owns and writes the answer back.
On PostgreSQL each write also sends a ``NOTIFY`` in the same transaction (delivered at
commit, so a woken listener always finds the row); the row is what counts, the
notification only wakes the reader (``jobhost.execution.forwarding``).

``cluster_keys`` holds the random key that servers sharing the store sign their internal
requests with (``jobhost.server.cluster``): whoever can read the store is trusted anyway.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobhost.models import Execution, RunRequest
from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

CHANNEL = "jobhost"  # NOTIFY channel; payloads name the instance they are for
KEEP_ANSWERED = timedelta(days=1)

run_requests = sa.Table(
    "run_requests",
    t.metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("execution_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("superuser", sa.Boolean, nullable=False),
    sa.Column("variables", sa.JSON(none_as_null=True)),
    sa.Column("stopped_by", sa.Text),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("created_at", t.UTCDateTime, nullable=False),
    sa.Column("handled_at", t.UTCDateTime),
    sa.Column("answer", sa.JSON(none_as_null=True)),
    sa.Index("ix_run_requests_handled_at_execution_id", "handled_at", "execution_id"),
)

cluster_keys = sa.Table(
    "cluster_keys",
    t.metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _request(row: sa.RowMapping) -> RunRequest:
    return t.from_row(
        RunRequest, row, roles=frozenset(row["roles"] or ()), superuser=bool(row["superuser"])
    )


def _notify(conn: Connection, to: str | None, kind: str, request_id: str) -> None:
    """Wake ``to`` (any listener when None) at commit; a no-op on SQLite."""
    if conn.dialect.name != "postgresql":
        return
    payload = json.dumps({"to": to, "kind": kind, "request": request_id})
    conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def add(store: SqlStore, request: RunRequest, owner: str | None) -> None:
    """Record ``request`` and wake the run's ``owner``."""
    with store.write() as conn:
        conn.execute(sa.insert(run_requests), [t.to_row(request, roles=sorted(request.roles))])
        _notify(conn, owner, "request", request.id)


def pending(store: SqlStore, owner: str) -> list[RunRequest]:
    """The unanswered requests for the runs ``owner`` owns, oldest first."""
    r = run_requests.c
    e = t.executions.c
    # From the few unanswered requests (their index) to each run by its key: never a
    # pass over history, however long.
    query = (
        sa.select(run_requests)
        .join(t.executions, e.id == r.execution_id)
        .where(r.handled_at.is_(None), e.owner == owner)
        .order_by(r.created_at, r.id)
    )
    with store.read() as conn:
        return [_request(row) for row in conn.execute(query).mappings()]


def answer(store: SqlStore, request: RunRequest, reply: dict[str, Any], now: datetime) -> bool:
    """Store the answer (once: False when another server answered first) and wake the
    sender; answers older than ``KEEP_ANSWERED`` are deleted on the way."""
    r = run_requests.c
    with store.write() as conn:
        done = conn.execute(
            sa.update(run_requests)
            .where(r.id == request.id, r.handled_at.is_(None))
            .values(handled_at=now, answer=reply)
        ).rowcount
        if done:
            _notify(conn, request.sender, "answer", request.id)
        conn.execute(sa.delete(run_requests).where(r.handled_at < now - KEEP_ANSWERED))
    return done > 0


def get(store: SqlStore, request_id: str) -> RunRequest | None:
    with store.read() as conn:
        row = (
            conn.execute(sa.select(run_requests).where(run_requests.c.id == request_id))
            .mappings()
            .first()
        )
    return None if row is None else _request(row)


def cluster_key(store: SqlStore) -> bytes:
    """The key servers on this store sign their internal requests with (made once)."""
    c = cluster_keys.c
    query = sa.select(c.value).where(c.name == "internal")
    with store.read() as conn:
        value = conn.execute(query).scalar_one_or_none()
    if value is None:
        try:
            with store.write() as conn:
                value = secrets.token_hex(32)
                conn.execute(sa.insert(cluster_keys).values(name="internal", value=value))
        except sa.exc.IntegrityError:  # another server made it first: use theirs
            with store.read() as conn:
                value = conn.execute(query).scalar_one()
    return bytes.fromhex(value)


def set_url(store: SqlStore, instance_id: str, url: str | None) -> None:
    """Where other servers reach this instance (known once its socket is bound)."""
    from jobhost.store.instances import instances

    with store.write() as conn:
        conn.execute(sa.update(instances).where(instances.c.id == instance_id).values(url=url))


NOTIFY_BYTES = 7000  # per NOTIFY: under PostgreSQL's 8,000-byte payload limit

Progress = tuple[float | None, str | None]


def announce(
    store: SqlStore,
    sender: str,
    execution_ids: list[str],
    progress: dict[str, Progress] | None = None,
) -> None:
    """Tell every listening server which runs ``sender`` changed (PostgreSQL only), with
    the progress reports of those runs that have one (not in the store yet)."""
    with store.write() as conn:
        if conn.dialect.name != "postgresql":
            return
        for payload in change_notes(sender, execution_ids, progress or {}):
            conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def change_notes(sender: str, ids: list[str], progress: dict[str, Progress]) -> list[str]:
    """``changed`` notes of at most ``NOTIFY_BYTES`` each, every id in one of them."""
    payloads: list[str] = []
    note: dict[str, Any] = {"to": None, "kind": "changed", "from": sender, "ids": []}
    size = len(json.dumps(note).encode())
    for execution_id in ids:
        report = progress.get(execution_id)
        cost = len(json.dumps(execution_id).encode()) + 2
        if report is not None:
            cost += len(json.dumps({execution_id: report}).encode())
        if note["ids"] and size + cost > NOTIFY_BYTES:
            payloads.append(json.dumps(note))
            note = {"to": None, "kind": "changed", "from": sender, "ids": []}
            size = len(json.dumps(note).encode())
        note["ids"].append(execution_id)
        if report is not None:
            note.setdefault("progress", {})[execution_id] = report
        size += cost
    if note["ids"]:
        payloads.append(json.dumps(note))
    return payloads


def executions(store: SqlStore, execution_ids: list[str]) -> list[Execution]:
    """The stored runs among ``execution_ids``."""
    c = t.executions.c
    with store.read() as conn:
        rows = conn.execute(sa.select(t.executions).where(c.id.in_(execution_ids))).mappings()
        return [t.execution_from_row(r) for r in rows]

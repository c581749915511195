"""Instances and their leases in SQL (SQLite and PostgreSQL), synchronous.

Every process that opens the store to run jobs (a server, or a local ``jobhost run``)
registers a row here and renews its lease on a heartbeat; its runs carry its id in
``executions.owner``. Reconciliation touches only the runs of instances whose lease has
expired, so nothing that opens the store ever ends a run whose owner is alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from jobhost.models import TERMINAL_STATUSES, Execution, ExecutionStatus, Instance
from jobhost.store import tables as t
from jobhost.store.sql import SqlStore

# IN over the few unfinished statuses, not NOT IN over the finished ones: the (status,
# created_at) index then answers "the active runs" without reading all of history.
_UNFINISHED = sorted(s.value for s in ExecutionStatus if s not in TERMINAL_STATUSES)

instances = sa.Table(
    "instances",
    t.metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("started_at", t.UTCDateTime, nullable=False),
    sa.Column("lease_expires_at", t.UTCDateTime, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("data_dir", sa.Text),
)


def _instance(row: sa.RowMapping) -> Instance:
    return t.from_row(Instance, row, draining=bool(row["draining"]))


def register(store: SqlStore, instance: Instance) -> None:
    with store.write() as conn:
        conn.execute(sa.insert(instances), [t.to_row(instance)])


def renew(store: SqlStore, instance_id: str, expires: datetime, draining: bool) -> bool:
    """Extend the lease; False when the row is gone (another instance declared us dead)."""
    c = instances.c
    with store.write() as conn:
        result = conn.execute(
            sa.update(instances)
            .where(c.id == instance_id)
            .values(lease_expires_at=expires, draining=draining)
        )
    return result.rowcount > 0


def list_instances(store: SqlStore) -> list[Instance]:
    c = instances.c
    with store.read() as conn:
        rows = conn.execute(sa.select(instances).order_by(c.started_at, c.id)).mappings()
        return [_instance(r) for r in rows]


def live_instances(store: SqlStore, now: datetime, kind: str | None = None) -> list[Instance]:
    """Instances whose lease runs past ``now`` (of one ``kind`` when given)."""
    c = instances.c
    query = sa.select(instances).where(c.lease_expires_at > now)
    if kind is not None:
        query = query.where(c.kind == kind)
    with store.read() as conn:
        return [_instance(r) for r in conn.execute(query.order_by(c.started_at)).mappings()]


def orphaned_executions(
    store: SqlStore, now: datetime
) -> tuple[list[Execution], dict[str, Instance]]:
    """Recorded-active executions whose owner's lease expired (or that have no owner, or an
    owner with no row), and the expired owners that are known, by id."""
    c = t.executions.c
    i = instances.c
    alive = sa.select(i.id).where(i.lease_expires_at > now)
    query = (
        sa.select(t.executions)
        .where(c.status.in_(_UNFINISHED), sa.or_(c.owner.is_(None), c.owner.not_in(alive)))
        .order_by(c.created_at, c.id)
    )
    with store.read() as conn:
        executions = [t.execution_from_row(r) for r in conn.execute(query).mappings()]
        owners = {e.owner for e in executions if e.owner is not None}
        found: dict[str, Instance] = {}
        if owners:
            rows = conn.execute(sa.select(instances).where(i.id.in_(sorted(owners)))).mappings()
            found = {row["id"]: _instance(row) for row in rows}
    return executions, found


def forget_dead(store: SqlStore, now: datetime, keep: Sequence[str] = ()) -> int:
    """Delete expired instances that no active execution names any more."""
    c = t.executions.c
    i = instances.c
    still_named = sa.select(c.owner).where(c.status.in_(_UNFINISHED), c.owner.is_not(None))
    query = sa.delete(instances).where(i.lease_expires_at <= now, i.id.not_in(still_named))
    if keep:
        query = query.where(i.id.not_in(list(keep)))
    with store.write() as conn:
        return conn.execute(query).rowcount


def expire(store: SqlStore, instance_id: str, now: datetime) -> None:
    """End our own lease at once (a clean exit): the next instance need not wait a TTL."""
    with store.write() as conn:
        conn.execute(
            sa.update(instances).where(instances.c.id == instance_id).values(lease_expires_at=now)
        )


def take_over(store: SqlStore, old: str, new: str, now: datetime) -> list[Execution]:
    """End the lease of ``old`` (a server on this host whose process is gone) and make its
    active runs ``new``'s in the same transaction: no server elsewhere can find them
    orphaned in between and record them lost while this one can re-adopt them."""
    c = t.executions.c
    active = sa.and_(c.owner == old, c.status.in_(_UNFINISHED))
    with store.write() as conn:
        taken = [
            t.execution_from_row(r)
            for r in conn.execute(sa.select(t.executions).where(active)).mappings()
        ]
        if taken:
            ids = [e.id for e in taken]
            conn.execute(sa.update(t.executions).where(c.id.in_(ids), active).values(owner=new))
        conn.execute(sa.update(instances).where(instances.c.id == old).values(lease_expires_at=now))
    return taken


def claim_orphan(store: SqlStore, execution_id: str, old_owner: str | None, new_owner: str) -> bool:
    """Take over an orphan's record, if no other instance took it first (several servers
    may reconcile the same dead owner at once: exactly one of them wins each run)."""
    c = t.executions.c
    same = c.owner.is_(None) if old_owner is None else c.owner == old_owner
    terminal = sorted(s.value for s in TERMINAL_STATUSES)
    with store.write() as conn:
        result = conn.execute(
            sa.update(t.executions)
            .where(c.id == execution_id, same, c.status.not_in(terminal))
            .values(owner=new_owner)
        )
    return result.rowcount > 0


def release_abandoned_claims(
    store: SqlStore, me: str, now: datetime, reason: str
) -> list[tuple[str, datetime]]:
    """Schedule fires claimed ahead by a server that died before running them.

    Only when no other server holds a live lease (then nobody else can be about to run
    a claim). A claim after an earlier recorded fire of its job is released, so the
    scheduler's catch-up runs it within the misfire grace or records it missed; a claim
    with no earlier fire to catch up from is recorded ``missed`` with ``reason``. Never
    silently dropped. Returns the claims handled."""
    from jobhost.store.schedules import schedule_fires

    f = schedule_fires.c
    i = instances.c
    with store.write() as conn:
        others = conn.execute(
            sa.select(sa.func.count())
            .select_from(instances)
            .where(i.id != me, i.kind == "server", i.lease_expires_at > now)
        ).scalar_one()
        if others:
            return []
        open_claims = [
            (row.job_id, row.scheduled_for)
            for row in conn.execute(sa.select(f.job_id, f.scheduled_for).where(f.outcome.is_(None)))
        ]
        for job_id, when in open_claims:
            earlier = conn.execute(
                sa.select(sa.func.count())
                .select_from(schedule_fires)
                .where(f.job_id == job_id, f.scheduled_for < when, f.outcome.is_not(None))
            ).scalar_one()
            where = sa.and_(f.job_id == job_id, f.scheduled_for == when, f.outcome.is_(None))
            if earlier:
                conn.execute(sa.delete(schedule_fires).where(where))
            else:
                conn.execute(
                    sa.update(schedule_fires)
                    .where(where)
                    .values(outcome="missed", reason=reason, recorded_at=now)
                )
    return open_claims

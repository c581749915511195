"""The ``Store`` contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import pkgutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import jobhost.store
from jobhost.config import Settings
from jobhost.errors import BadRequest
from jobhost.models import (
    ApiToken,
    AuditEvent,
    AuditQuery,
    Execution,
    ExecutionStatus,
    HistoryQuery,
    Session,
    Trigger,
    User,
)
from jobhost.store import SqlStore, head_revision, make_store, normalize_url, tables
from jobhost.store.tables import metadata

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = ExecutionStatus


def run(
    id: str,
    job: str = "Shop/Nightly",
    *,
    status: ExecutionStatus = S.SUCCEEDED,
    at: datetime = T0,
    user: str | None = "alice",
    key: str | None = None,
) -> Execution:
    return Execution(
        id=id,
        job_id=job,
        status=status,
        trigger=Trigger.USER,
        user=user,
        created_at=at,
        idempotency_key=key,
    )


def walk(sql_store: SqlStore, query: HistoryQuery) -> list[list[str]]:
    """Every page of a history query, as lists of IDs."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = sql_store.history(
            HistoryQuery(
                job_id=query.job_id,
                user=query.user,
                statuses=query.statuses,
                since=query.since,
                until=query.until,
                limit=query.limit,
                cursor=cursor,
            )
        )
        pages.append([e.id for e in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


# --- executions ------------------------------------------------------------------------


def test_every_execution_field_round_trips(store: SqlStore) -> None:
    berlin = timezone(timedelta(hours=2))
    execution = Execution(
        id="e1",
        job_id="Shop/Nightly",
        status=S.FAILED,
        trigger=Trigger.SCHEDULE,
        user="alice",
        variables={"Region": "eu", "Token": "***", "Count": 3},
        test=True,
        created_at=datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=berlin),
        started_at=datetime(2026, 3, 29, 0, 0, 1, 1, tzinfo=UTC),
        ended_at=datetime(2026, 3, 29, 0, 5, tzinfo=UTC),
        exit_code=3,
        exit_signal=None,
        result={"rows": [1, 2.5, None], "ok": False, "name": "Zürich ✓"},
        error="exit code 3",
        pid=4242,
        host="web-1",
        cpu_seconds=1.25,
        peak_rss_bytes=3 * 1024**3,
        output_bytes=10_000_000_000,
        progress=0.75,
        progress_message="three quarters",
        idempotency_key="k-1",
        restart_count=2,
        scheduled_for=datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
    )
    store.save_executions([execution])

    loaded = store.get_execution("e1")

    assert loaded == execution
    assert loaded is not None
    assert loaded.created_at.tzinfo == UTC
    assert loaded.created_at == datetime(2026, 3, 28, 23, 30, 0, 123456, tzinfo=UTC)
    assert store.get_execution("missing") is None


def test_result_scalars_and_absent_result_round_trip(store: SqlStore) -> None:
    store.save_executions([run("a").evolve(result=[1, "two"]), run("b"), run("c").evolve(result=7)])

    assert [store.get_execution(i).result for i in "abc"] == [[1, "two"], None, 7]  # type: ignore[union-attr]


def test_naive_datetimes_are_refused_with_the_fix(store: SqlStore) -> None:
    with pytest.raises(sa.exc.StatementError, match=r"naive datetime .* pass an aware UTC value"):
        store.save_executions([run("a", at=datetime(2026, 1, 1))])


def test_batch_upsert_inserts_and_updates_in_one_call(store: SqlStore) -> None:
    store.save_executions([run("a", status=S.QUEUED), run("b", status=S.QUEUED)])

    store.save_executions(
        [
            run("a", status=S.RUNNING).evolve(pid=10, host="h"),
            run("c", status=S.QUEUED),
            run("a", status=S.SUCCEEDED).evolve(pid=10, exit_code=0),  # last one wins
        ]
    )

    a = store.get_execution("a")
    assert a is not None
    assert (a.status, a.pid, a.exit_code, a.host) == (S.SUCCEEDED, 10, 0, None)
    assert store.get_execution("b").status == S.QUEUED  # type: ignore[union-attr]
    assert store.get_execution("c") is not None
    assert len(store.history(HistoryQuery(limit=100)).items) == 3


def test_empty_batches_are_a_no_op(store: SqlStore) -> None:
    store.save_executions([])
    store.add_audit([])

    assert store.history(HistoryQuery()).items == []


def test_active_executions_are_the_non_terminal_ones(store: SqlStore) -> None:
    statuses = list(ExecutionStatus)
    store.save_executions(
        [run(f"r{i}", status=s, at=T0 + timedelta(seconds=i)) for i, s in enumerate(statuses)]
    )

    active = store.active_executions()

    assert {e.status for e in active} == {S.SCHEDULED, S.QUEUED, S.STARTING, S.RUNNING, S.STOPPING}
    assert all(not e.status.terminal for e in active)


def test_history_filters_each_and_combined(store: SqlStore) -> None:
    store.save_executions(
        [
            run("1", "A/x", status=S.SUCCEEDED, user="alice", at=T0),
            run("2", "A/x", status=S.FAILED, user="bob", at=T0 + timedelta(hours=1)),
            run("3", "B/y", status=S.FAILED, user="alice", at=T0 + timedelta(hours=2)),
            run("4", "B/y", status=S.RUNNING, user=None, at=T0 + timedelta(hours=3)),
            run("5", "A/x", status=S.LOST, user="alice", at=T0 + timedelta(hours=4)),
        ]
    )

    def ids(**filters: object) -> list[str]:
        return [e.id for e in store.history(HistoryQuery(**filters)).items]  # type: ignore[arg-type]

    assert ids() == ["5", "4", "3", "2", "1"]
    assert ids(job_id="A/x") == ["5", "2", "1"]
    assert ids(user="alice") == ["5", "3", "1"]
    assert ids(statuses=(S.FAILED, S.LOST)) == ["5", "3", "2"]
    assert ids(since=T0 + timedelta(hours=2)) == ["5", "4", "3"]
    assert ids(until=T0 + timedelta(hours=2)) == ["2", "1"]
    assert ids(job_id="A/x", user="alice", statuses=(S.SUCCEEDED, S.LOST)) == ["5", "1"]
    assert ids(job_id="A/x", since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=4)) == [
        "2"
    ]
    assert ids(job_id="Nope/none") == []


def test_pagination_visits_every_row_once_across_ties(store: SqlStore) -> None:
    # 45 rows over 9 distinct instants: every page boundary falls inside a tie.
    rows = [run(f"id{i:03d}", at=T0 + timedelta(seconds=i // 5)) for i in range(45)]
    store.save_executions(rows)

    pages = walk(store, HistoryQuery(limit=7))

    seen = [i for page in pages for i in page]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 7, 7, 3]
    assert len(seen) == len(set(seen)) == 45
    expected = sorted(rows, key=lambda e: (e.created_at, e.id), reverse=True)
    assert seen == [e.id for e in expected]


def test_pagination_keeps_the_filters(store: SqlStore) -> None:
    store.save_executions(
        [run(f"a{i}", "A/x", at=T0) for i in range(5)]
        + [run(f"b{i}", "B/y", at=T0) for i in range(5)]
    )

    pages = walk(store, HistoryQuery(job_id="B/y", limit=2))

    assert pages == [["b4", "b3"], ["b2", "b1"], ["b0"]]


def test_page_size_is_clamped_to_1_through_1000(store: SqlStore) -> None:
    store.save_executions([run(f"r{i:04d}", at=T0 + timedelta(seconds=i)) for i in range(1005)])

    assert len(store.history(HistoryQuery(limit=0)).items) == 1
    big = store.history(HistoryQuery(limit=5000))
    assert len(big.items) == 1000
    assert big.next_cursor is not None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        base64.urlsafe_b64encode(b"plain text").decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "x"]').decode(),  # naive
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", 5]').decode(),
        base64.urlsafe_b64encode(b"[1]").decode(),
    ],
)
def test_a_malformed_cursor_is_a_bad_request(store: SqlStore, cursor: str) -> None:
    with pytest.raises(BadRequest, match=r"Invalid cursor .*next_cursor of a previous page"):
        store.history(HistoryQuery(cursor=cursor))
    with pytest.raises(BadRequest, match="Invalid cursor"):
        store.audit(AuditQuery(cursor=cursor))


def test_idempotency_keys_are_unique_per_user(store: SqlStore) -> None:
    store.save_executions(
        [run("a", key="k1", user="alice"), run("b", key="k1", user="bob"), run("c", user="alice")]
    )

    assert store.find_by_idempotency_key("alice", "k1").id == "a"  # type: ignore[union-attr]
    assert store.find_by_idempotency_key("bob", "k1").id == "b"  # type: ignore[union-attr]
    assert store.find_by_idempotency_key("carol", "k1") is None
    assert store.find_by_idempotency_key("alice", "k2") is None
    with pytest.raises(sa.exc.IntegrityError):
        store.save_executions([run("d", key="k1", user="alice")])
    assert store.get_execution("d") is None


def test_idempotency_key_without_user(store: SqlStore) -> None:
    store.save_executions([run("a", key="fire-1", user=None)])

    assert store.find_by_idempotency_key(None, "fire-1").id == "a"  # type: ignore[union-attr]
    assert store.find_by_idempotency_key("alice", "fire-1") is None


def test_last_executions_gives_the_newest_per_job(store: SqlStore) -> None:
    store.save_executions(
        [
            run("x1", "A/x", at=T0),
            run("x2", "A/x", at=T0 + timedelta(minutes=5), status=S.RUNNING),
            run("y1", "B/y", at=T0 + timedelta(minutes=9)),
            run("y0", "B/y", at=T0 + timedelta(minutes=1)),
            run("z1", "C/z", at=T0 + timedelta(hours=1)),
        ]
    )

    last = store.last_executions(["A/x", "B/y", "D/none", "A/x"])

    assert {job: e.id for job, e in last.items()} == {"A/x": "x2", "B/y": "y1"}
    assert last["A/x"].status == S.RUNNING
    assert store.last_executions([]) == {}


def test_last_executions_breaks_ties_by_id_and_spans_chunks(store: SqlStore) -> None:
    # Two runs of a job created at the same instant: the larger ID is the newer (the order
    # history pages in). 700 jobs: more than one IN/VALUES chunk of 500.
    rows = [run("tie-a", "T/tie"), run("tie-b", "T/tie")]
    rows += [run(f"r{n:04d}", f"Many/j{n:04d}", at=T0 + timedelta(seconds=n)) for n in range(700)]
    store.save_executions(rows)

    last = store.last_executions(["T/tie", *(f"Many/j{n:04d}" for n in range(700))])

    assert last["T/tie"].id == "tie-b"
    assert len(last) == 701
    assert all(last[f"Many/j{n:04d}"].id == f"r{n:04d}" for n in range(700))


def _sqlite_plans(sql_store: SqlStore, work: Callable[[], object]) -> list[str]:
    """SQLite's query plan for each SELECT (and DELETE) that ``work`` runs on ``sql_store``."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: object, cursor: object, sql: str, params: Any, *rest: object) -> None:
        if sql.lstrip().upper().startswith(("SELECT", "DELETE")):
            statements.append((sql, params))

    sa.event.listen(sql_store.engine, "before_cursor_execute", capture)
    try:
        work()
    finally:
        sa.event.remove(sql_store.engine, "before_cursor_execute", capture)
    with sql_store.engine.connect() as conn:
        return [
            " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", p))
            for sql, p in statements
        ]


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SqlStore]:
    sql_store = SqlStore(sqlite_url)
    sql_store.migrate()
    try:
        yield sql_store
    finally:
        sql_store.close()


def test_engine_open_reads_no_finished_history(sqlite_store: SqlStore) -> None:
    """The queries run at every open (last run per job, unfinished runs) are answered from
    indexes: SQLite's plan for them scans no table, however long the history."""
    sqlite_store.save_executions([run("a", "A/x"), run("b", "B/y", status=S.RUNNING)])

    def work() -> None:
        assert set(sqlite_store.last_executions(["A/x", "B/y"])) == {"A/x", "B/y"}
        assert [e.id for e in sqlite_store.active_executions()] == ["b"]

    plans = _sqlite_plans(sqlite_store, work)

    assert len(plans) == 2
    for plan in plans:
        assert "SCAN executions" not in plan, plan
        assert "SCAN newest" not in plan, plan


def test_reconciliation_at_open_reads_no_finished_history(sqlite_store: SqlStore) -> None:
    """Every open looks for runs whose owner died and forgets dead instances: both find the
    active runs through the status index, not by reading every finished run (NOT IN over
    the finished statuses did, a second per million runs)."""
    from jobhost.store import instances

    gone = dataclasses.replace(run("b", "B/y", status=S.RUNNING), owner="dead")
    sqlite_store.save_executions([run("a", "A/x"), gone])
    found: list[list[str]] = []

    def work() -> None:
        orphans, _ = instances.orphaned_executions(sqlite_store, T0)
        found.append([e.id for e in orphans])
        instances.forget_dead(sqlite_store, T0)

    plans = _sqlite_plans(sqlite_store, work)

    assert found == [["b"]]
    assert len(plans) >= 2
    for plan in plans:
        assert "SCAN executions" not in plan, plan


def test_a_filtered_history_page_reads_from_the_newest_end(sqlite_store: SqlStore) -> None:
    """A user's page (runs of the jobs they may view, or their own) walks the time index and
    stops at the page's end, instead of reading and sorting every visible run."""
    sqlite_store.save_executions(
        [run(f"r{n}", ("A/x", "B/y")[n % 2], at=T0 + timedelta(minutes=n)) for n in range(6)]
    )
    query = HistoryQuery(limit=2, visible_job_ids=frozenset({"A/x"}), visible_user="carol")
    pages: list[list[str]] = []

    def work() -> None:
        pages.append([e.id for e in sqlite_store.history(query).items])

    plans = _sqlite_plans(sqlite_store, work)

    assert pages == [["r4", "r2"]]
    assert plans[0] == "SCAN executions USING INDEX ix_executions_created_at_id"
    for plan in plans[1:]:  # the page's full rows, by primary key
        assert "SCAN" not in plan, plan


def test_history_pages_show_a_runs_latest_row(store: SqlStore) -> None:
    """History keeps finished runs it has read, and still shows every change to a row."""
    live = run("live", status=S.RUNNING)
    store.save_executions([live, run("done", at=T0 - timedelta(minutes=1))])
    assert [e.id for e in store.history(HistoryQuery()).items] == ["live", "done"]

    store.save_executions([live.evolve(progress=0.5, progress_message="half way")])
    first = store.history(HistoryQuery()).items[0]
    assert (first.progress, first.progress_message) == (0.5, "half way")

    ended = live.evolve(status=S.FAILED, exit_code=3, output_bytes=10)
    store.save_executions([ended])
    assert store.history(HistoryQuery()).items[0] == ended
    store.save_executions([ended.evolve(output_bytes=25)])  # the last output flushed after
    assert store.history(HistoryQuery()).items[0].output_bytes == 25
    assert store.history(HistoryQuery(statuses=(S.FAILED,))).items[0].output_bytes == 25


def test_prune_by_age_keeps_recent_and_unfinished_runs(store: SqlStore) -> None:
    now = T0 + timedelta(days=30)
    store.save_executions(
        [
            run("old-done", at=T0),
            run("old-failed", at=T0, status=S.FAILED),
            run("old-running", at=T0, status=S.RUNNING),
            run("old-queued", at=T0, status=S.QUEUED),
            run("recent", at=now - timedelta(days=2)),
        ]
    )

    deleted = store.prune(now=now, days=7, per_job=None)

    assert sorted(deleted) == ["old-done", "old-failed"]
    left = {e.id for e in store.history(HistoryQuery()).items}
    assert left == {"old-running", "old-queued", "recent"}
    assert store.prune(now=now, days=7, per_job=None) == []


def test_prune_per_job_keeps_the_newest_finished_runs_of_each_job(store: SqlStore) -> None:
    rows = [run(f"a{i}", "A/x", at=T0 + timedelta(minutes=i)) for i in range(5)]
    rows += [run(f"b{i}", "B/y", at=T0 + timedelta(minutes=i)) for i in range(2)]
    rows += [run("a-live", "A/x", at=T0 - timedelta(days=1), status=S.RUNNING)]
    store.save_executions(rows)

    deleted = store.prune(now=T0, days=None, per_job=2)

    assert sorted(deleted) == ["a0", "a1", "a2"]
    left = {e.id for e in store.history(HistoryQuery()).items}
    assert left == {"a3", "a4", "b0", "b1", "a-live"}


def test_prune_by_age_and_count_together(store: SqlStore) -> None:
    now = T0 + timedelta(days=10)
    store.save_executions(
        [run("ancient", at=T0)] + [run(f"n{i}", at=now - timedelta(minutes=i)) for i in range(4)]
    )

    deleted = store.prune(now=now, days=5, per_job=3)

    assert sorted(deleted) == ["ancient", "n3"]
    assert store.prune(now=now, days=None, per_job=None) == []


# --- audit -----------------------------------------------------------------------------


def test_audit_round_trip_filters_and_paging(store: SqlStore) -> None:
    events = [
        AuditEvent(
            action="job.start" if i % 2 else "auth.login",
            user="alice" if i % 3 else "bob",
            target="Shop/Nightly" if i % 2 else None,
            outcome="denied" if i == 4 else "ok",
            address="10.0.0.1",
            details={"i": i},
            at=T0 + timedelta(seconds=i // 3),  # ties
            id=f"ev{i:02d}",
        )
        for i in range(20)
    ]
    store.add_audit(events)

    seen: list[AuditEvent] = []
    cursor: str | None = None
    while True:
        page = store.audit(AuditQuery(limit=6, cursor=cursor))
        seen.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == sorted(events, key=lambda e: (e.at, e.id), reverse=True)
    alice_starts = store.audit(AuditQuery(user="alice", action="job.start")).items
    assert {e.id for e in alice_starts} == {
        e.id for e in events if e.user == "alice" and e.action == "job.start"
    }
    assert {e.id for e in store.audit(AuditQuery(target="Shop/Nightly")).items} == {
        e.id for e in events if e.target == "Shop/Nightly"
    }
    window = store.audit(
        AuditQuery(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=3))
    )
    assert [e.id for e in window.items] == ["ev08", "ev07", "ev06"]


# --- users, tokens, sessions -----------------------------------------------------------


def test_users_crud(store: SqlStore) -> None:
    assert store.count_users() == 0
    admin = User("admin", "hash-1", frozenset({"admin", "ops"}), created_at=T0)
    store.save_user(admin)
    store.save_user(User("bob", "hash-2"))

    assert store.get_user("admin") == admin
    assert store.count_users() == 2
    assert [u.username for u in store.list_users()] == ["admin", "bob"]

    store.save_user(User("bob", "hash-3", frozenset({"viewer"}), disabled=True, created_at=T0))
    bob = store.get_user("bob")
    assert bob is not None
    assert (bob.password_hash, bob.roles, bob.disabled) == ("hash-3", frozenset({"viewer"}), True)
    assert store.count_users() == 2

    assert store.delete_user("bob") is True
    assert store.delete_user("bob") is False
    assert store.get_user("bob") is None
    assert store.count_users() == 1


def test_tokens_crud(store: SqlStore) -> None:
    store.save_user(User("alice", "h"))
    store.save_user(User("bob", "h"))
    token = ApiToken(
        "t1", "alice", "deploy", "sha-1", created_at=T0, expires_at=T0 + timedelta(days=1)
    )
    store.save_token(token)
    store.save_token(ApiToken("t2", "bob", "ci", "sha-2", created_at=T0 + timedelta(seconds=1)))

    assert store.get_token_by_hash("sha-1") == token
    assert store.get_token_by_hash("sha-unknown") is None
    assert [t.id for t in store.list_tokens("alice")] == ["t1"]
    assert [t.id for t in store.list_tokens(None)] == ["t1", "t2"]

    store.touch_token("t1", T0 + timedelta(hours=1))
    assert store.get_token_by_hash("sha-1").last_used_at == T0 + timedelta(hours=1)  # type: ignore[union-attr]

    assert store.revoke_token("t1") is True
    assert store.get_token_by_hash("sha-1").revoked is True  # type: ignore[union-attr]
    assert store.revoke_token("nope") is False
    assert [t.id for t in store.list_tokens("alice")] == ["t1"]  # revoked ones stay listed


def test_a_token_hash_is_unique(store: SqlStore) -> None:
    store.save_user(User("alice", "h"))
    store.save_token(ApiToken("t1", "alice", "one", "same-hash"))

    with pytest.raises(sa.exc.IntegrityError):
        store.save_token(ApiToken("t2", "alice", "two", "same-hash"))


def test_sessions_crud_and_expiry(store: SqlStore) -> None:
    store.save_user(User("alice", "h"))
    store.save_user(User("bob", "h"))
    old = Session("s-old", "alice", "csrf-1", expires_at=T0, created_at=T0 - timedelta(hours=12))
    new = Session("s-new", "alice", "csrf-2", expires_at=T0 + timedelta(hours=12), created_at=T0)
    bobs = Session("s-bob", "bob", "csrf-3", expires_at=T0 + timedelta(hours=12), created_at=T0)
    for session in (old, new, bobs):
        store.save_session(session)

    assert store.get_session("s-new") == new
    assert store.get_session("s-old") == old  # expired, still returned: the caller decides
    assert store.delete_expired_sessions(T0) == 1
    assert store.get_session("s-old") is None

    store.delete_session("s-new")
    assert store.get_session("s-new") is None
    store.delete_session("s-new")  # deleting twice is fine

    store.delete_user_sessions("bob")
    assert store.get_session("s-bob") is None


def test_deleting_a_user_removes_their_tokens_and_sessions(store: SqlStore) -> None:
    store.save_user(User("alice", "h"))
    store.save_token(ApiToken("t1", "alice", "deploy", "sha-1"))
    store.save_session(Session("s1", "alice", "csrf", expires_at=T0))

    store.delete_user("alice")

    assert store.get_token_by_hash("sha-1") is None
    assert store.get_session("s1") is None


def test_credentials_need_an_existing_user(store: SqlStore) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        store.save_token(ApiToken("t1", "ghost", "x", "sha"))
    with pytest.raises(sa.exc.IntegrityError):
        store.save_session(Session("s1", "ghost", "csrf", expires_at=T0))


# --- schema and connections ------------------------------------------------------------


def _versions(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_migrate_again_is_a_no_op_and_keeps_rows(store: SqlStore) -> None:
    store.save_executions([run("keep")])

    store.migrate()
    store.migrate()

    assert store.get_execution("keep") is not None
    assert _versions(store.url) == [head_revision()]


def test_current_revision_before_and_after_migrate(db_url: str) -> None:
    sql_store = SqlStore(db_url)
    try:
        assert sql_store.current_revision() is None
        sql_store.migrate()
        assert sql_store.current_revision() == head_revision()
    finally:
        sql_store.close()


def test_migrations_match_tables(store: SqlStore) -> None:
    # Feature modules (schedules, ...) attach their tables to the shared metadata.
    for module in pkgutil.iter_modules(jobhost.store.__path__):
        importlib.import_module(f"jobhost.store.{module.name}")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)

    assert diff == []


def test_concurrent_migrate_from_threads(db_url: str) -> None:
    stores = [SqlStore(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate(sql_store: SqlStore) -> None:
        barrier.wait()
        try:
            sql_store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sql_store in stores:
        sql_store.close()

    assert errors == []
    assert _versions(db_url) == [head_revision()]


def test_concurrent_migrate_from_processes(db_url: str) -> None:
    code = "import sys; from jobhost.store import SqlStore; SqlStore(sys.argv[1]).migrate()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]

    assert outcomes == [(0, ""), (0, "")]
    assert _versions(db_url) == [head_revision()]


def test_store_is_usable_from_another_thread(store: SqlStore) -> None:
    worker = threading.Thread(target=store.save_executions, args=([run("from-thread")],))
    worker.start()
    worker.join()

    assert store.get_execution("from-thread") is not None


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    sql_store = SqlStore(sqlite_url)
    try:
        with sql_store.engine.connect() as conn:
            pragmas = [
                conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
    finally:
        sql_store.close()

    assert pragmas == ["wal", 1, 5000, 1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/jh", "postgresql+psycopg://u:p@db:5432/jh"),
        ("postgresql://u@db/jh", "postgresql+psycopg://u@db/jh"),
        ("postgresql+psycopg://u@db/jh", "postgresql+psycopg://u@db/jh"),
        ("sqlite:////var/lib/jobhost/jobhost.db", "sqlite:////var/lib/jobhost/jobhost.db"),
    ],
)
def test_database_urls_are_normalised_to_psycopg(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_make_store_creates_the_data_dir_for_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "deep" / "data")

    sql_store = make_store(settings)
    try:
        sql_store.migrate()
        sql_store.save_user(User("admin", "h"))
        assert sql_store.count_users() == 1
    finally:
        sql_store.close()

    assert (tmp_path / "deep" / "data" / "jobhost.db").is_file()


def test_history_permission_scope(store: SqlStore) -> None:
    """The engine scopes history to the jobs a user may view plus the runs they started."""
    store.save_executions(
        [
            run("seen", "A/Seen", user="carol"),
            run("mine", "B/Hidden", user="carol", at=T0 + timedelta(minutes=1)),
            run("other", "B/Hidden", user="dave", at=T0 + timedelta(minutes=2)),
        ]
    )
    scoped = HistoryQuery(visible_job_ids=frozenset({"A/Seen"}), visible_user="carol")
    assert [e.id for e in store.history(scoped).items] == ["mine", "seen"]
    only_jobs = HistoryQuery(visible_job_ids=frozenset({"A/Seen"}))
    assert [e.id for e in store.history(only_jobs).items] == ["seen"]
    assert store.history(HistoryQuery(visible_job_ids=frozenset())).items == []


def test_save_batch_commits_executions_and_audit_together(store: SqlStore) -> None:
    event = AuditEvent(action="job.start", user="alice", target="Shop/Nightly", at=T0)
    store.save_batch([run("b1"), run("b2", at=T0 + timedelta(seconds=1))], [event])
    store.save_batch([run("b1", status=S.FAILED)], [])
    updated = store.get_execution("b1")
    assert updated is not None
    assert updated.status is S.FAILED
    assert [e.id for e in store.history(HistoryQuery()).items] == ["b2", "b1"]
    assert [e.id for e in store.audit(AuditQuery()).items] == [event.id]
    with pytest.raises(sa.exc.IntegrityError):  # a duplicate audit ID fails the whole batch
        store.save_batch([run("b3")], [event])
    assert store.get_execution("b3") is None


def test_history_shows_what_a_finished_run_started_after_it_ended(store: SqlStore) -> None:
    # A chain links its runs to a run that has already ended (``chained``): a history page
    # read before the link must not keep serving the run without it.
    ended = run("r1")
    store.save_executions([ended])
    assert store.history(HistoryQuery()).items[0].chained == ()

    store.save_executions([ended.evolve(chained=("r2",))])

    assert store.history(HistoryQuery()).items[0].chained == ("r2",)


def test_a_live_row_is_written_again_after_it_was_deleted(sqlite_store: SqlStore) -> None:
    sqlite_store.save_executions([run("gone", status=S.RUNNING)])
    with sqlite_store.write() as conn:
        conn.execute(sa.delete(tables.executions).where(tables.executions.c.id == "gone"))
    sqlite_store.save_executions([run("gone", status=S.RUNNING).evolve(pid=7)])  # an update
    stored = sqlite_store.get_execution("gone")
    assert stored is not None
    assert (stored.status, stored.pid, stored.job_id) == (S.RUNNING, 7, "Shop/Nightly")


def test_a_live_row_written_again_holds_every_change_of_its_batch(
    sqlite_store: SqlStore,
) -> None:
    sqlite_store.save_executions([run("a", status=S.RUNNING).evolve(host="h", pid=1)])
    sqlite_store.save_executions(
        [
            run("a", status=S.RUNNING).evolve(host="h", pid=1, progress=0.5),
            run("b", status=S.QUEUED),
            run("a", status=S.SUCCEEDED).evolve(pid=1, exit_code=0),  # host and progress unset
        ]
    )
    event = AuditEvent(action="job.start", user="alice", target="Shop/Nightly")
    with pytest.raises(sa.exc.IntegrityError):  # the same audit event twice: nothing stored
        sqlite_store.save_batch([run("b", status=S.RUNNING)], [event, event])
    sqlite_store.save_executions([run("b", status=S.QUEUED).evolve(queue_position=2)])
    a, b = sqlite_store.get_execution("a"), sqlite_store.get_execution("b")
    assert a == run("a", status=S.SUCCEEDED).evolve(pid=1, exit_code=0)
    assert b == run("b", status=S.QUEUED).evolve(queue_position=2)

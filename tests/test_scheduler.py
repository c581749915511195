"""The scheduler against a real engine and real processes, on a clock the test moves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobhost.clock import ManualClock
from jobhost.engine import JobHost
from jobhost.errors import InvalidSchedule, PermissionDenied, VariableError
from jobhost.host import scheduler_for
from jobhost.models import AuditQuery, Execution, HistoryQuery, Principal, Trigger
from jobhost.scheduler import Scheduler
from jobhost.store import schedules as db
from tests.enginefixtures import EngineFactory
from tests.jobfolders import touch_later, write_job

T0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
SLOW = "import time\ntime.sleep(600)\n"
ALICE = Principal(username="alice", roles=frozenset({"ops"}))
BOB = Principal(username="bob", roles=frozenset({"dev"}))


def job(root: Path, name: str, **fields: Any) -> Path:
    return write_job(root, "Lab", name, {"Name": name, **fields})


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> AsyncIterator[JobHost]:
    async with engine_factory() as host:
        yield host


async def started(engine: JobHost, clock: ManualClock) -> Scheduler:
    scheduler = scheduler_for(engine, clock=clock)
    await scheduler.start()
    return scheduler


async def runs(engine: JobHost, job_id: str) -> list[Execution]:
    page = await engine.history(HistoryQuery(job_id=job_id, limit=1000))
    return sorted(page.items, key=lambda e: e.scheduled_for or e.created_at)


async def test_fires_when_due_with_trigger_and_scheduled_for(apps: Path, engine: JobHost) -> None:
    job(apps, "Tick", default_schedule="*/5 * * * *")
    await engine.reload()
    clock = ManualClock(T0 + timedelta(minutes=1))
    scheduler = await started(engine, clock)
    try:
        assert scheduler.service.next_fire("Lab/Tick") == T0 + timedelta(minutes=5)
        clock.advance(timedelta(minutes=3, seconds=59))
        await scheduler.settle()
        assert await runs(engine, "Lab/Tick") == []
        clock.advance(1)
        await scheduler.settle()
        [execution] = await runs(engine, "Lab/Tick")
        assert execution.trigger is Trigger.SCHEDULE
        assert execution.scheduled_for == T0 + timedelta(minutes=5)
        assert execution.user == "jobhost"
        finished = await engine.wait(execution.id)
        assert finished.status.value == "succeeded"
        assert scheduler.service.next_fire("Lab/Tick") == T0 + timedelta(minutes=10)
        [fire] = await engine.journal.call(db.fires, engine.store, "Lab/Tick", 10)
        assert (fire.outcome, fire.execution_id) == ("started", execution.id)
    finally:
        await scheduler.aclose()


async def test_disabled_and_invalid_jobs_do_not_fire(apps: Path, engine: JobHost) -> None:
    job(apps, "Off", default_schedule="* * * * *", enabled=False)
    write_job(apps, "Lab", "Bad", '{"default_schedule": "* * * * *", "Name": ', script=None)
    await engine.reload()
    clock = ManualClock(T0)
    scheduler = await started(engine, clock)
    try:
        clock.advance(timedelta(minutes=3))
        await scheduler.settle()
        assert scheduler.service.next_fire("Lab/Off") is None
        assert await runs(engine, "Lab/Off") == []
        assert await runs(engine, "Lab/Bad") == []
    finally:
        await scheduler.aclose()


async def test_an_override_changes_the_schedule_live_and_is_audited(
    apps: Path,
    engine: JobHost,
) -> None:
    job(apps, "Daily", default_schedule="0 3 * * *", roles_schedule=["ops"])
    await engine.reload()
    clock = ManualClock(T0)
    scheduler = await started(engine, clock)
    try:
        assert scheduler.service.next_fire("Lab/Daily") == datetime(2024, 6, 2, 3, tzinfo=UTC)
        shown = await scheduler.service.set_override(
            "Lab/Daily", ALICE, schedule="30 12 * * *", timezone="Europe/Berlin"
        )
        assert shown["source"] == "override"
        assert shown["schedule"] == "30 12 * * *"
        assert shown["next_fires"][0] == "2024-06-02T10:30:00Z"
        assert scheduler.service.next_fire("Lab/Daily") == datetime(2024, 6, 2, 10, 30, tzinfo=UTC)
        clock.set(datetime(2024, 6, 2, 10, 30, tzinfo=UTC))
        await scheduler.settle()
        assert len(await runs(engine, "Lab/Daily")) == 1

        disabled = await scheduler.service.set_override("Lab/Daily", ALICE, enabled=False)
        assert (disabled["enabled"], disabled["next_fires"]) == (False, [])
        assert scheduler.service.next_fire("Lab/Daily") is None
        clock.advance(timedelta(days=2))
        await scheduler.settle()
        assert len(await runs(engine, "Lab/Daily")) == 1

        cleared = await scheduler.service.clear_override("Lab/Daily", ALICE)
        assert (cleared["source"], cleared["schedule"], cleared["timezone"]) == (
            "job.json",
            "0 3 * * *",
            "UTC",
        )
        page = await engine.audit_log(AuditQuery(action="schedule.update", target="Lab/Daily"))
        assert [e.details for e in reversed(page.items)] == [
            {"schedule": "30 12 * * *", "timezone": "Europe/Berlin"},
            {"enabled": False},
            {"cleared": True, "had_override": True},
        ]
        assert {e.user for e in page.items} == {"alice"}
    finally:
        await scheduler.aclose()


async def test_changing_a_schedule_needs_roles_schedule(apps: Path, engine: JobHost) -> None:
    job(apps, "Guarded", default_schedule="@daily", roles_schedule=["ops"])
    job(apps, "AdminsOnly", default_schedule="@daily")
    await engine.reload()
    scheduler = await started(engine, ManualClock(T0))
    try:
        with pytest.raises(PermissionDenied) as caught:
            await scheduler.service.set_override("Lab/Guarded", BOB, schedule="@hourly")
        assert caught.value.message == (
            "'bob' may not change the schedule of 'Lab/Guarded': requires one of the roles ops"
        )
        with pytest.raises(PermissionDenied) as caught:
            await scheduler.service.clear_override("Lab/AdminsOnly", ALICE)
        assert caught.value.message.endswith("requires a superuser role")
        page = await engine.audit_log(AuditQuery(action="schedule.update"))
        assert [(e.user, e.target, e.outcome) for e in reversed(page.items)] == [
            ("bob", "Lab/Guarded", "denied"),
            ("alice", "Lab/AdminsOnly", "denied"),
        ]
        listed = {s["job_id"]: s["can_edit"] for s in await scheduler.service.list_schedules(ALICE)}
        assert listed == {"Lab/AdminsOnly": False, "Lab/Guarded": True}
    finally:
        await scheduler.aclose()


async def test_bad_overrides_are_refused_with_the_reason(apps: Path, engine: JobHost) -> None:
    job(
        apps,
        "Vars",
        default_schedule="@daily",
        template_variables={
            "Count": {"type": "integer", "default": 1},
            "Token": {"secret": True, "default": "x"},
        },
    )
    await engine.reload()
    scheduler = await started(engine, ManualClock(T0))
    root = Principal("root", superuser=True)
    try:
        with pytest.raises(InvalidSchedule, match=r"has 4 fields; expected 5"):
            await scheduler.service.set_override("Lab/Vars", root, schedule="* * * *")
        with pytest.raises(InvalidSchedule, match=r"Unknown time zone 'Moon/Base'"):
            await scheduler.service.set_override("Lab/Vars", root, timezone="Moon/Base")
        with pytest.raises(VariableError) as caught:
            await scheduler.service.set_override("Lab/Vars", root, variables={"Cuont": 3})
        assert "Unknown variable 'Cuont' (did you mean 'Count'?)" in caught.value.message
        with pytest.raises(VariableError, match=r"Count must be an integer, got 'many'"):
            await scheduler.service.set_override("Lab/Vars", root, variables={"Count": "many"})
        with pytest.raises(VariableError, match=r"Token is secret"):
            await scheduler.service.set_override("Lab/Vars", root, variables={"Token": "y"})
        ok = await scheduler.service.set_override("Lab/Vars", root, variables={"Count": "7"})
        assert ok["variables"] == {"Count": 7}
    finally:
        await scheduler.aclose()


async def test_override_variables_reach_the_scheduled_run(apps: Path, engine: JobHost) -> None:
    job(
        apps,
        "Greet",
        default_schedule="0 * * * *",
        template_variables={"Who": {"type": "string"}},
    )
    await engine.reload()
    clock = ManualClock(T0 + timedelta(minutes=1))
    scheduler = await started(engine, clock)
    try:
        clock.advance(timedelta(hours=1))
        await scheduler.settle()
        [fire] = await engine.journal.call(db.fires, engine.store, "Lab/Greet", 10)
        assert fire.outcome == "failed"
        assert fire.reason == "Variables rejected: Missing required variables: Who"
        [rejected] = await runs(engine, "Lab/Greet")
        assert fire.execution_id == rejected.id
        assert (rejected.status.value, rejected.trigger, rejected.scheduled_for) == (
            "rejected",
            Trigger.SCHEDULE,
            T0 + timedelta(hours=1),
        )
        assert rejected.error == "Variables rejected: Missing required variables: Who"
        assert (await engine.wait(rejected.id)).status.value == "rejected"
        await scheduler.service.set_override(
            "Lab/Greet", Principal.local(), variables={"Who": "world"}
        )
        clock.advance(timedelta(hours=1))
        await scheduler.settle()
        [_, execution] = await runs(engine, "Lab/Greet")
        assert execution.variables == {"Who": "world"}
    finally:
        await scheduler.aclose()


async def test_overlap_follows_max_concurrent_and_records_skips(
    apps: Path,
    engine: JobHost,
) -> None:
    job(apps, "Long", default_schedule="* * * * *", max_concurrent=1, on_conflict="reject")
    (apps / "Lab" / "jobs" / "Long" / "run.py").write_text(SLOW)
    await engine.reload()
    clock = ManualClock(T0)
    scheduler = await started(engine, clock)
    try:
        for _ in range(3):
            clock.advance(60)
            await scheduler.settle()
        fires = await engine.journal.call(db.fires, engine.store, "Lab/Long", 10)
        assert [f.outcome for f in reversed(fires)] == ["started", "skipped", "skipped"]
        assert "already has 1 active execution(s) (max_concurrent=1" in (fires[0].reason or "")
        assert len(await runs(engine, "Lab/Long")) == 1
    finally:
        await scheduler.aclose()  # the engine stops the long run as it closes


async def test_a_stall_coalesces_into_one_run(apps: Path, engine: JobHost) -> None:
    job(apps, "Often", default_schedule="* * * * * */5", misfire_grace_seconds=30)
    await engine.reload()
    clock = ManualClock(T0)
    scheduler = await started(engine, clock)
    try:
        clock.advance(52)  # ten fires due at once, the newest 2 s ago
        await scheduler.settle()
        [execution] = await runs(engine, "Lab/Often")
        assert execution.scheduled_for == T0 + timedelta(seconds=50)
        fires = await engine.journal.call(db.fires, engine.store, "Lab/Often", 20)
        assert [f.outcome for f in fires] == ["started"] + ["missed"] * 9
        assert (fires[1].reason or "").startswith("coalesced: only the newest missed fire")
        assert scheduler.service.next_fire("Lab/Often") == T0 + timedelta(seconds=55)
    finally:
        await scheduler.aclose()


async def test_a_catalog_reload_reschedules(apps: Path, engine: JobHost) -> None:
    folder = job(apps, "Moving", default_schedule="0 6 * * *")
    await engine.reload()
    scheduler = await started(engine, ManualClock(T0))
    try:
        assert scheduler.service.next_fire("Lab/Moving") == datetime(2024, 6, 2, 6, tzinfo=UTC)
        spec = json.loads((folder / "job.json").read_text())
        spec["default_schedule"] = "15 12 * * *"
        (folder / "job.json").write_text(json.dumps(spec))
        touch_later(folder / "job.json")
        await engine.reload()
        assert scheduler.service.next_fire("Lab/Moving") == datetime(2024, 6, 1, 12, 15, tzinfo=UTC)
        (folder / "job.json").unlink()
        await engine.reload()
        assert scheduler.service.next_fire("Lab/Moving") is None
    finally:
        await scheduler.aclose()


async def test_preview_lists_the_next_fires_or_says_what_is_wrong(engine: JobHost) -> None:
    scheduler = scheduler_for(engine, clock=ManualClock(T0))
    assert scheduler.service.preview("0 9 * * 1-5", "America/New_York", 2) == [
        datetime(2024, 6, 3, 13, tzinfo=UTC),
        datetime(2024, 6, 4, 13, tzinfo=UTC),
    ]
    with pytest.raises(InvalidSchedule, match="never fires"):
        scheduler.service.preview("0 0 30 2 *")


async def test_an_every_second_schedule_fires_in_real_time(
    engine_factory: EngineFactory,
    apps: Path,
) -> None:
    job(apps, "Second", default_schedule="* * * * * *", max_concurrent=0)
    seen: list[Execution] = []
    async with engine_factory(scheduler_enabled=True) as host:
        assert host.scheduler is not None
        async for change in host.changes():
            if change.job_id == "Lab/Second" and change.id not in {e.id for e in seen}:
                seen.append(change)
            if len(seen) >= 3:
                break
    assert all(e.trigger is Trigger.SCHEDULE and e.scheduled_for is not None for e in seen)
    assert len({e.scheduled_for for e in seen}) == 3


async def test_jobs_due_at_the_same_instant_all_start_with_one_claim(
    apps: Path, engine: JobHost
) -> None:
    names = [f"Batch{index}" for index in range(12)]
    for name in names:
        job(apps, name, default_schedule="* * * * *", max_concurrent=0)
    await engine.reload()
    clock = ManualClock(T0)
    scheduler = await started(engine, clock)
    try:
        clock.set(T0 + timedelta(seconds=60) - timedelta(milliseconds=50))
        await scheduler.settle()
        # Within the claim-ahead window: claimed, not yet started.
        claimed = [
            await engine.journal.call(db.fires, engine.store, f"Lab/{name}", 10) for name in names
        ]
        assert [[f.outcome for f in fires] for fires in claimed] == [[None]] * len(names)
        assert await runs(engine, "Lab/Batch0") == []
        clock.advance(timedelta(milliseconds=50))
        await scheduler.settle()
        for name in names:
            [execution] = await runs(engine, f"Lab/{name}")
            assert execution.scheduled_for == T0 + timedelta(minutes=1)
            [fire] = await engine.journal.call(db.fires, engine.store, f"Lab/{name}", 10)
            assert (fire.outcome, fire.execution_id) == ("started", execution.id)
        assert scheduler.fired == len(names)
        assert [when for when, _ in scheduler.lateness] == [T0 + timedelta(minutes=1)] * len(names)
    finally:
        await scheduler.aclose()


async def test_a_rare_override_with_a_recorded_fire_does_not_stop_the_scheduler(
    apps: Path, engine: JobHost
) -> None:
    # Once crashed the start-up: croniter walked back past year 1 for "0 0 * 2 MON#5".
    job(apps, "Rare", default_schedule="@daily")
    job(apps, "Tick", default_schedule="*/5 * * * *")
    await engine.reload()
    root = Principal("root", superuser=True)
    first = await started(engine, ManualClock(T0))
    try:
        await first.service.set_override("Lab/Rare", root, schedule="0 0 * 2 MON#5")
    finally:
        await first.aclose()
    await engine.journal.call(
        db.claim_fires, engine.store, [("Lab/Rare", datetime(2016, 2, 29, tzinfo=UTC))], T0
    )
    clock = ManualClock(T0 + timedelta(minutes=1))
    scheduler = await started(engine, clock)
    try:
        assert scheduler.service.next_fire("Lab/Rare") == datetime(2044, 2, 29, tzinfo=UTC)
        shown = await scheduler.service.get("Lab/Rare", root)
        assert shown["description"] == (
            "At 00:00, on the fifth Monday of the month, only in February, UTC"
        )
        assert shown["problem"] is None
        clock.advance(timedelta(minutes=4))
        await scheduler.settle()
        assert len(await runs(engine, "Lab/Tick")) == 1
    finally:
        await scheduler.aclose()


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 31 2 *", "Cron expression '0 0 31 2 *' never fires"),
        ("5-1 * * * *", "minute field '5-1': range '5-1' goes backwards; write it low to high"),
        ("R * * * *", "minute field 'R': 'R' (a random value) is not supported"),
        ("0 0 ? * *", "day-of-month field '?': '?' is not supported; write '*' (any)"),
        ("0 0 * * 5l,X", "day-of-week field '5l,X': 'X' is not a number or a name such as SUN"),
    ],
)
async def test_an_override_is_refused_exactly_where_preview_refuses_it(
    apps: Path, engine: JobHost, expr: str, message: str
) -> None:
    job(apps, "Daily", default_schedule="@daily")
    await engine.reload()
    scheduler = await started(engine, ManualClock(T0))
    root = Principal("root", superuser=True)
    try:
        with pytest.raises(InvalidSchedule) as on_preview:
            scheduler.service.preview(expr)
        with pytest.raises(InvalidSchedule) as on_put:
            await scheduler.service.set_override("Lab/Daily", root, schedule=expr)
        assert message in on_put.value.message
        assert on_put.value.message == on_preview.value.message
    finally:
        await scheduler.aclose()


async def test_a_fire_refused_by_the_init_script_is_a_rejected_run_with_its_last_line(
    apps: Path, engine: JobHost
) -> None:
    refuse = (
        "import sys\nprint('checking the target', file=sys.stderr)\n"
        "print('No backup target is mounted at /mnt/backup', file=sys.stderr)\nsys.exit(1)\n"
    )
    write_job(
        apps,
        "Lab",
        "Guarded",
        {"Name": "Guarded", "default_schedule": "0 * * * *"},
        init=("init-job.py", refuse),
    )
    await engine.reload()
    clock = ManualClock(T0 + timedelta(minutes=1))
    scheduler = await started(engine, clock)
    try:
        clock.advance(timedelta(hours=1))
        await scheduler.settle()
        [rejected] = await runs(engine, "Lab/Guarded")
        assert rejected.status.value == "rejected"
        assert rejected.trigger is Trigger.SCHEDULE
        assert rejected.scheduled_for == T0 + timedelta(hours=1)
        assert rejected.error is not None
        assert "No backup target is mounted at /mnt/backup" in rejected.error
        [fire] = await engine.journal.call(db.fires, engine.store, "Lab/Guarded", 10)
        assert (fire.outcome, fire.execution_id) == ("failed", rejected.id)
    finally:
        await scheduler.aclose()

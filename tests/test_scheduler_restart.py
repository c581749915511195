"""Restarts and hard kills: one execution per fire, missed fires run once or are recorded."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from jobhost.clock import ManualClock
from jobhost.engine import JobHost
from jobhost.host import scheduler_for
from jobhost.models import HistoryQuery
from jobhost.scheduler import Scheduler
from jobhost.store import schedules as db
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

T0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


async def life(host: JobHost, at: datetime, advance: float = 0) -> Scheduler:
    """One life of a scheduler: start at ``at``, optionally let time pass, settle, close."""
    clock = ManualClock(at)
    scheduler = scheduler_for(host, clock=clock)
    await scheduler.start()
    await scheduler.settle()
    if advance:
        clock.advance(advance)
        await scheduler.settle()
    await scheduler.aclose()
    return scheduler


async def per_fire(host: JobHost, job_id: str) -> Counter[datetime | None]:
    page = await host.history(HistoryQuery(job_id=job_id, limit=1000))
    return Counter(e.scheduled_for for e in page.items)


async def test_restart_before_and_after_a_fire_runs_each_fire_once(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    write_job(apps, "Lab", "Tick", {"default_schedule": "* * * * *", "max_concurrent": 0})
    async with engine_factory() as host:
        await life(host, T0, advance=60)  # fires 12:01
    async with engine_factory() as host:
        await life(host, T0 + timedelta(seconds=60))  # same instant again: nothing new
        await life(host, T0 + timedelta(seconds=90), advance=30)  # fires 12:02
        counts = await per_fire(host, "Lab/Tick")
    assert counts == {T0 + timedelta(minutes=1): 1, T0 + timedelta(minutes=2): 1}


async def test_downtime_within_grace_runs_the_newest_fire_once(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    write_job(apps, "Lab", "Tick", {"default_schedule": "* * * * *", "max_concurrent": 0})
    async with engine_factory() as host:
        await life(host, T0, advance=60)
    async with engine_factory() as host:
        # Down from 12:01:00 to 12:05:30: four missed fires, the newest 30 s ago.
        await life(host, T0 + timedelta(minutes=5, seconds=30))
        await life(host, T0 + timedelta(minutes=5, seconds=31))  # a second restart adds none
        counts = await per_fire(host, "Lab/Tick")
        fires = await host.journal.call(db.fires, host.store, "Lab/Tick", 10)
    assert counts == {T0 + timedelta(minutes=1): 1, T0 + timedelta(minutes=5): 1}
    assert [f.outcome for f in fires] == ["started", "missed", "missed", "missed", "started"]


async def test_long_downtime_records_at_most_100_missed_fires_and_runs_none(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    spec = {"default_schedule": "* * * * *", "max_concurrent": 0, "misfire_grace_seconds": 10}
    write_job(apps, "Lab", "Min", spec)
    async with engine_factory() as host:
        await life(host, T0, advance=60)
    async with engine_factory() as host:
        await life(host, T0 + timedelta(days=30, seconds=30))  # newest fire 30 s ago
        counts = await per_fire(host, "Lab/Min")
        fires = await host.journal.call(db.fires, host.store, "Lab/Min", 1000)
    assert counts == {T0 + timedelta(minutes=1): 1}
    assert Counter(f.outcome for f in fires) == {"missed": 100, "started": 1}
    assert fires[0].scheduled_for == T0 + timedelta(days=30)
    assert "beyond the misfire grace of 10 s" in (fires[0].reason or "")


async def test_a_new_job_starts_from_now_without_backfill(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    write_job(apps, "Lab", "Fresh", {"default_schedule": "* * * * *"})
    async with engine_factory() as host:
        await life(host, T0 + timedelta(seconds=5))
        assert await per_fire(host, "Lab/Fresh") == Counter()


async def test_two_schedulers_on_one_store_run_a_fire_once(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    write_job(apps, "Lab", "Tick", {"default_schedule": "* * * * *", "max_concurrent": 0})
    async with engine_factory() as one, engine_factory() as two:
        clocks = [ManualClock(T0), ManualClock(T0)]
        schedulers = [scheduler_for(h, clock=c) for h, c in zip((one, two), clocks, strict=True)]
        for scheduler in schedulers:
            await scheduler.start()
        for clock in clocks:
            clock.advance(60)
        await asyncio.gather(*(s.settle() for s in schedulers))
        for scheduler in schedulers:
            await scheduler.aclose()
        total = (await per_fire(one, "Lab/Tick")) + (await per_fire(two, "Lab/Tick"))
    # Each engine sees the shared store, so the one run shows up in both histories.
    assert total == {T0 + timedelta(minutes=1): 2}
    assert schedulers[0].fired + schedulers[1].fired == 1


CHILD = """
import asyncio, sys
from jobhost.config import Settings
from jobhost.engine import JobHost

async def main():
    settings = Settings(apps_roots=[sys.argv[1]], data_dir=sys.argv[2], watch=False)
    async with JobHost(settings):
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_hard_kill_right_after_a_claim_never_runs_that_fire_twice(
    apps: Path,
    engine_factory: EngineFactory,
    tmp_path: Path,
) -> None:
    write_job(apps, "Lab", "Sec", {"default_schedule": "* * * * * *", "max_concurrent": 0})
    data = tmp_path / "data"
    async with engine_factory():
        pass  # create and migrate the store
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(apps), str(data)], cwd=REPO, start_new_session=True
    )
    db_engine = sa.create_engine(f"sqlite:///{data / 'jobhost.db'}")
    try:
        claimed = 0
        while claimed < 2:
            await asyncio.sleep(0.05)  # waiting on another process: nothing to await
            with db_engine.connect() as conn:
                claimed = conn.execute(sa.text("SELECT count(*) FROM schedule_fires")).scalar_one()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        db_engine.dispose()
    async with engine_factory() as host:
        with sa.create_engine(f"sqlite:///{data / 'jobhost.db'}").connect() as conn:
            newest = conn.execute(sa.text("SELECT max(scheduled_for) FROM schedule_fires"))
            last = datetime.fromisoformat(str(newest.scalar_one())).replace(tzinfo=UTC)
        await life(host, last + timedelta(seconds=2))
        counts = await per_fire(host, "Lab/Sec")
        fires = await host.journal.call(db.fires, host.store, "Lab/Sec", 1000)
    assert counts, "some fire started"
    assert max(counts.values()) == 1
    # A run exists only for a claimed fire (the kill may land before its outcome is written).
    assert set(counts) <= {f.scheduled_for for f in fires}


async def test_a_fire_claimed_ahead_but_not_due_at_shutdown_runs_after_the_restart(
    apps: Path,
    engine_factory: EngineFactory,
) -> None:
    write_job(apps, "Lab", "Tick", {"default_schedule": "* * * * *", "max_concurrent": 0})
    async with engine_factory() as host:
        await life(host, T0, advance=60)  # fires 12:01
        # Closed 50 ms before 12:02: that fire was already claimed (claims run ahead).
        await life(host, T0 + timedelta(seconds=120) - timedelta(milliseconds=50))
        await life(host, T0 + timedelta(seconds=121))  # down for 1 s: within the grace
        counts = await per_fire(host, "Lab/Tick")
        fires = await host.journal.call(db.fires, host.store, "Lab/Tick", 10)
    assert counts == {T0 + timedelta(minutes=1): 1, T0 + timedelta(minutes=2): 1}
    assert [f.outcome for f in fires] == ["started", "started"]

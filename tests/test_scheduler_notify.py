"""Fires that did not run reach ``notify`` rules with ``on: ["missed"]``: a real engine,
real processes and a real SMTP server (aiosmtpd) in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from jobhost.clock import ManualClock
from jobhost.engine import JobHost
from jobhost.host import scheduler_for
from jobhost.scheduler import Scheduler
from jobhost.store import deliveries
from jobhost.store import schedules as db
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.notifyfixtures import SmtpServer

T0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
PUBLIC_URL = "https://jobs.example.com"
SLOW = "import time\ntime.sleep(600)\n"


def notifying_job(apps: Path, name: str, on: list[str], **fields: Any) -> str:
    rule = {"on": on, "channel": "ops", "to": ["oncall@example.com"]}
    write_job(apps, "Ops", name, {"Name": name, "notify": [rule], **fields})
    return f"Ops/{name}"


def email_settings(smtp: SmtpServer) -> dict[str, Any]:
    return {
        "notifications_enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "public_url": PUBLIC_URL,
        "channels": {"ops": {"type": "email", "to": ["oncall@example.com"]}},
    }


class Mailbox:
    """The SMTP server's inbox, awaitable: each accepted message wakes ``receive``."""

    def __init__(self, smtp: SmtpServer) -> None:
        self.inbox = smtp.inbox
        self._arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        accept = smtp.inbox.handle_DATA

        # aiosmtpd calls the handler on its own thread's loop; hop back to ours to signal.
        async def handle_data(server: Any, session: Any, envelope: Any) -> str:
            answer = await accept(server, session, envelope)
            loop.call_soon_threadsafe(self._arrived.set)
            return answer

        smtp.inbox.handle_DATA = handle_data  # type: ignore[method-assign]

    async def receive(self, count: int) -> list[EmailMessage]:
        while len(self.inbox.messages) < count:
            self._arrived.clear()
            if len(self.inbox.messages) >= count:
                break
            await self._arrived.wait()
        return list(self.inbox.messages)


@pytest.fixture
async def mailbox(smtp_server: SmtpServer) -> Mailbox:
    return Mailbox(smtp_server)


@asynccontextmanager
async def scheduling(host: JobHost, at: datetime) -> AsyncIterator[tuple[Scheduler, ManualClock]]:
    clock = ManualClock(at)
    scheduler = scheduler_for(host, clock=clock)
    await scheduler.start()
    try:
        await scheduler.settle()
        yield scheduler, clock
    finally:
        await scheduler.aclose()


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


async def test_fires_missed_while_down_send_one_missed_message(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer, mailbox: Mailbox
) -> None:
    job_id = notifying_job(
        apps, "Hourly", ["missed"], default_schedule="0 * * * *", misfire_grace_seconds=60
    )
    settings = email_settings(smtp_server)
    async with (
        engine_factory(**settings) as host,
        scheduling(host, T0 - timedelta(minutes=1)) as (scheduler, clock),
    ):
        clock.advance(60)  # the 12:00 fire runs
        await scheduler.settle()
    async with engine_factory(**settings) as host:
        # Down until 15:10: the 13:00, 14:00 and 15:00 fires are all past the grace.
        async with scheduling(host, T0 + timedelta(hours=3, minutes=10)):
            pass
        fires = await host.journal.call(db.fires, host.store, job_id, 10)
        [message] = await mailbox.receive(1)
    assert [f.outcome for f in fires] == ["missed", "missed", "missed", "started"]
    assert smtp_server.inbox.recipients == [["oncall@example.com"]]
    assert (
        message["Subject"]
        == "[JobHost] Ops/Hourly missed its scheduled run of 2024-06-01T15:00:00Z"
    )
    body = body_of(message)
    assert "Scheduled: 2024-06-01T15:00:00Z" in body
    assert (
        "Outcome:   did not run: missed: due 600 s ago, beyond the misfire grace of 60 s "
        "(JobHost was down or stalled) (3 fires from 2024-06-01T13:00:00Z to "
        "2024-06-01T15:00:00Z)"
    ) in body
    assert f"Open it: {PUBLIC_URL}/#/jobs/Ops/Hourly" in body


async def test_a_fire_skipped_by_overlap_sends_a_missed_message(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer, mailbox: Mailbox
) -> None:
    job_id = notifying_job(
        apps,
        "Long",
        ["missed"],
        default_schedule="* * * * *",
        max_concurrent=1,
        on_conflict="reject",
    )
    (apps / "Ops" / "jobs" / "Long" / "run.py").write_text(SLOW)
    async with engine_factory(**email_settings(smtp_server)) as host:
        async with scheduling(host, T0) as (scheduler, clock):
            clock.advance(60)  # 12:01 starts the long run
            await scheduler.settle()
            clock.advance(60)  # 12:02 finds it still running
            await scheduler.settle()
            [message] = await mailbox.receive(1)
        fires = await host.journal.call(db.fires, host.store, job_id, 10)
    assert [f.outcome for f in fires] == ["skipped", "started"]
    assert (
        message["Subject"] == "[JobHost] Ops/Long missed its scheduled run of 2024-06-01T12:02:00Z"
    )
    body = body_of(message)
    assert "Outcome:   did not run: skipped: Job 'Ops/Long' already has 1 active execution(s)" in (
        body.replace("\n", " ")
    )


async def test_a_fire_that_cannot_start_is_a_failed_run_and_notifies_on_failed(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer, mailbox: Mailbox
) -> None:
    notifying_job(
        apps,
        "Greet",
        ["failed"],
        default_schedule="* * * * *",
        template_variables={"Who": {"type": "string"}},
    )
    async with (
        engine_factory(**email_settings(smtp_server)) as host,
        scheduling(host, T0) as (scheduler, clock),
    ):
        clock.advance(60)
        await scheduler.settle()
        [message] = await mailbox.receive(1)
        counts = dict(host.supervisor.finished_counts)
    assert message["Subject"] == "[JobHost] Ops/Greet failed"
    body = body_of(message)
    assert "Outcome:    failed (status rejected)" in body
    assert "Started by: the schedule (fire of 2024-06-01T12:01:00Z)" in body
    assert "Error:      Variables rejected: Missing required variables: Who" in body
    assert counts.get("rejected") == 1


async def test_jobs_without_a_missed_rule_send_nothing(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    job_id = notifying_job(
        apps, "Quiet", ["failed"], default_schedule="0 * * * *", misfire_grace_seconds=60
    )
    settings = email_settings(smtp_server)
    async with (
        engine_factory(**settings) as host,
        scheduling(host, T0 - timedelta(minutes=1)) as (scheduler, clock),
    ):
        clock.advance(60)
        await scheduler.settle()
    async with engine_factory(**settings) as host:
        async with scheduling(host, T0 + timedelta(hours=5, minutes=10)):
            pass
        assert host.notifier is not None
        await host.notifier.flush()  # every missed fire told so far has been planned
        fires = await host.journal.call(db.fires, host.store, job_id, 10)
        pending = await host.journal.call(deliveries.pending_deliveries, host.store)
    assert [f.outcome for f in fires] == ["missed"] * 5 + ["started"]
    assert pending == []
    assert smtp_server.inbox.messages == []

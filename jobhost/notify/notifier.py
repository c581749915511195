"""``Notifier``: the hook that turns finished runs into email and webhook deliveries.

The hook only enqueues (it runs on the event loop, inside the run's bookkeeping).
Two tasks do the work:

- the *planner* decides which rules fire (``after_failures`` reads the job's recent
  history), builds each message once, and writes one ``pending`` row per rule x
  recipient **before** any attempt;
- the *sender* attempts due deliveries one at a time, records every attempt (attempts,
  last_error, status, next_attempt_at) and retries with exponential backoff until the
  channel's ``retries`` are spent (then ``failed``).

On ``start()`` the pending rows of a previous life are resumed, so a restart loses no
notification. Delivery is at least once: an attempt cut short by a shutdown is made
again after the restart (webhook receivers get ``delivery_id`` to drop duplicates).
Test runs never notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from jobhost.abc import CatalogView, Hook, Records, SecretValues
from jobhost.catalog.discovery import Catalog
from jobhost.config import Settings
from jobhost.execution.launch import state_dir
from jobhost.models import Execution, ExecutionStatus, HistoryQuery, new_id
from jobhost.notify.channels import (
    DeliveryError,
    EmailChannel,
    WebhookChannel,
    parse_channels,
    post_webhook,
    send_email,
)
from jobhost.notify.message import contained_files, execution_message, missed_message, output_tail
from jobhost.notify.rules import FAILURES, Event, NotifyRule, parse_rules, unknown_channels
from jobhost.store import deliveries as rows
from jobhost.store.deliveries import FAILED, PENDING, SENT, Delivery
from jobhost.store.sql import SqlStore

log = logging.getLogger(__name__)

_FAILURE_STATUSES = frozenset(
    {
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.LOST,
        ExecutionStatus.REJECTED,
    }
)
_EVENT_OF = {
    ExecutionStatus.FAILED: Event.FAILED,
    ExecutionStatus.REJECTED: Event.FAILED,  # a scheduled fire that could not start
    ExecutionStatus.TIMED_OUT: Event.TIMED_OUT,
    ExecutionStatus.LOST: Event.LOST,
    ExecutionStatus.SUCCEEDED: Event.SUCCEEDED,
}

# What the hook hands the planner: a finished run (with the secret values it used),
# or a missed fire.
_Finished = tuple[Execution, Execution | None, list[str]]
_Missed = tuple[str, datetime, str]


class Notifier(Hook):
    """The notifications hook of one ``JobHost``; ``start()`` after the journal runs.

    It sees the engine through narrow views: the store through ``records``, job.json's
    rules through ``catalog``, a finished run's secret values through ``secrets`` (to
    scrub what leaves the host), and the other ``hooks`` (metrics) it reports to."""

    def __init__(
        self,
        settings: Settings,
        store: SqlStore,
        records: Records,
        *,
        catalog: CatalogView,
        secrets: SecretValues,
        hooks: Sequence[Hook],
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._records = records
        self._catalog = catalog
        self._secrets = secrets
        self._hooks = hooks
        self._clock = clock
        self.channels: dict[str, EmailChannel | WebhookChannel] = {}
        self._intake: asyncio.Queue[_Finished | _Missed] = asyncio.Queue()
        self._due: list[tuple[float, int, str]] = []  # (loop time, sequence, delivery id)
        self._pending: dict[str, Delivery] = {}
        self._sequence = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._warned: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Validate the channels, resume pending deliveries, start the two tasks."""
        self.channels = parse_channels(self._settings.channels)
        for delivery in await self._records.call(rows.pending_deliveries, self._store):
            self._schedule(delivery)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._plan_loop(), name="jobhost-notify-plan"),
            loop.create_task(self._send_loop(), name="jobhost-notify-send"),
        ]

    async def aclose(self) -> None:
        """Plan what was enqueued (so it is durable), then stop; pending rows stay pending."""
        if self._tasks and not self._tasks[0].done():
            await self._intake.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------- the hook
    def execution_finished(self, execution: Execution, previous: Execution | None) -> None:
        if execution.test:
            return
        # Only the supervisor holds the real secret values, and only until hooks return.
        secrets = self._secrets.secret_values(execution.id)
        self._intake.put_nowait((execution, previous, secrets))

    def fire_missed(self, job_id: str, scheduled_for: datetime, reason: str) -> None:
        self._intake.put_nowait((job_id, scheduled_for, reason))

    # ------------------------------------------------------------- reading
    async def deliveries(self, execution_id: str) -> list[Delivery]:
        """The deliveries an execution caused, as stored."""
        return await self._records.call(rows.deliveries_of, self._store, execution_id)

    async def flush(self) -> None:
        """Return once every run finished so far has had its deliveries planned and stored."""
        await self._intake.join()

    async def wait_for(
        self, execution_id: str, predicate: Callable[[list[Delivery]], bool]
    ) -> list[Delivery]:
        """The execution's deliveries, once ``predicate`` holds for them (woken by every
        recorded change, never by a timer)."""
        async with self._changed:
            while True:
                found = await self.deliveries(execution_id)
                if predicate(found):
                    return found
                await self._changed.wait()

    async def _announce(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------- planning
    async def _plan_loop(self) -> None:
        while True:
            item = await self._intake.get()
            try:
                if isinstance(item[0], Execution):
                    await self._plan_finished(*item)
                else:
                    await self._plan_missed(*item)
            except Exception:  # one bad event must not end notifications for all
                log.exception("planning notifications failed for %r", item[0])
            finally:
                self._intake.task_done()

    def _rules_of(self, job_id: str) -> list[NotifyRule]:
        job = self._catalog.catalog.get(job_id)
        if job is None or job.definition is None or not job.definition.notify:
            return []
        return parse_rules(job.definition.notify)

    async def _plan_finished(
        self, execution: Execution, previous: Execution | None, secrets: list[str]
    ) -> None:
        # An attempt that will be retried is no outcome yet: only ``retrying`` rules fire.
        status_event = Event.RETRYING if execution.next_attempt else _EVENT_OF.get(execution.status)
        rules = self._rules_of(execution.job_id)
        if status_event is None or not rules:
            return
        recovered = (
            status_event is Event.SUCCEEDED
            and previous is not None
            and previous.status in _FAILURE_STATUSES
            and previous.next_attempt is None  # a retried attempt was never announced failed
        )
        fired: list[tuple[int, NotifyRule, Event]] = []
        for index, rule in enumerate(rules):
            if recovered and Event.RECOVERED in rule.on:
                fired.append((index, rule, Event.RECOVERED))
            elif status_event in rule.on:
                fired.append((index, rule, status_event))
        gated = [r.after_failures for _, r, e in fired if e in FAILURES and r.after_failures > 1]
        if gated:
            streak = await self._failure_streak(execution.job_id, max(gated))
            fired = [f for f in fired if f[2] not in FAILURES or streak >= f[1].after_failures]
        if not fired:
            return
        tail = await asyncio.to_thread(output_tail, self._settings, execution, secrets)
        job = self._catalog.catalog.get(execution.job_id)
        name = job.definition.Name if job is not None and job.definition is not None else ""
        planned: list[Delivery] = []
        for index, rule, event in fired:
            attachments: list[str] = []
            if rule.attach_result and isinstance(execution.result, dict):
                root = state_dir(self._settings, execution.job_id)
                found = execution.result.get("attachments")
                attachments = await asyncio.to_thread(contained_files, found, root)
            payload = execution_message(
                self._settings, event, execution, job_name=name, tail=tail, attachments=attachments
            )
            planned += self._deliveries(execution.job_id, execution.id, index, rule, event, payload)
        await self._store_new(planned)

    async def _plan_missed(self, job_id: str, scheduled_for: datetime, reason: str) -> None:
        fired = [(i, r) for i, r in enumerate(self._rules_of(job_id)) if Event.MISSED in r.on]
        if not fired:
            return
        payload = missed_message(self._settings, job_id, scheduled_for, reason)
        planned: list[Delivery] = []
        for index, rule in fired:
            planned += self._deliveries(job_id, None, index, rule, Event.MISSED, payload)
        await self._store_new(planned)

    async def _failure_streak(self, job_id: str, enough: int) -> int:
        """How many of the job's newest finished runs failed in a row (up to ``enough``);
        stopped runs neither count nor break the streak, test runs are ignored."""
        page = await self._records.call(
            self._store.history, HistoryQuery(job_id=job_id, limit=min(1000, enough * 4 + 20))
        )
        streak = 0
        for run in page.items:
            if run.test or not run.status.terminal or run.status is ExecutionStatus.STOPPED:
                continue
            if run.status not in _FAILURE_STATUSES:
                break
            streak += 1
            if streak >= enough:
                break
        return streak

    def _deliveries(
        self,
        job_id: str,
        execution_id: str | None,
        index: int,
        rule: NotifyRule,
        event: Event,
        payload: dict[str, Any],
    ) -> list[Delivery]:
        """One row per recipient; a rule that cannot be sent becomes one ``failed`` row
        saying why, so the operator sees it next to the run."""
        now = self._clock()
        base = Delivery(
            id="",
            execution_id=execution_id,
            job_id=job_id,
            rule_index=index,
            event=event.value,
            channel=rule.channel,
            recipient="",
            status=PENDING,
            created_at=now,
            updated_at=now,
            payload=payload,
            next_attempt_at=now,
        )
        channel = self.channels.get(rule.channel)
        problem: str | None = None
        recipients: list[str] = []
        if channel is None:
            problem = unknown_channels([rule.model_dump()], self.channels)[0]
            self._warn_once(job_id, rule.channel, f"{job_id}: {problem}")
        elif isinstance(channel, WebhookChannel):
            recipients = [channel.url]
        else:
            recipients = list(rule.to or channel.to)
            if not recipients:
                problem = (
                    f"notify[{index}] has no recipients: give 'to' in the rule or in "
                    f"channel {rule.channel!r}"
                )
        if problem is not None:
            return [
                replace(base, id=new_id(), status=FAILED, last_error=problem, next_attempt_at=None)
            ]
        return [replace(base, id=new_id(), recipient=to) for to in recipients]

    async def _store_new(self, planned: list[Delivery]) -> None:
        await self._records.call(rows.add_deliveries, self._store, planned)
        for delivery in planned:
            if delivery.status == PENDING:
                self._schedule(delivery)
            else:  # could not be sent at all (no such channel, no recipient)
                self._tell_attempted(delivery.channel, "failed")
        await self._announce()

    # ------------------------------------------------------------- sending
    def _schedule(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        wait = 0.0
        if delivery.next_attempt_at is not None:
            wait = max(0.0, (delivery.next_attempt_at - self._clock()).total_seconds())
        self._sequence += 1
        self._pending[delivery.id] = delivery
        heapq.heappush(self._due, (loop.time() + wait, self._sequence, delivery.id))
        self._wake.set()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._due:
                await self._wake.wait()
                continue
            wait = self._due[0][0] - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            _, _, delivery_id = heapq.heappop(self._due)
            delivery = self._pending.pop(delivery_id, None)
            if delivery is not None:
                await self._attempt(delivery)

    async def _attempt(self, delivery: Delivery) -> None:
        channel = self.channels.get(delivery.channel)
        error: str | None = None
        try:
            if channel is None:
                known = ", ".join(sorted(self.channels)) or "none"
                raise DeliveryError(
                    f"no channel {delivery.channel!r} is configured on this host "
                    f"(channels: {known})"
                )
            if isinstance(channel, EmailChannel):
                await send_email(self._settings, delivery.recipient, delivery.payload)
            else:
                if self._client is None:  # made on the first webhook: its TLS context
                    self._client = httpx.AsyncClient()  # is megabytes nobody else needs
                await post_webhook(self._client, channel, delivery.id, delivery.payload)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in one delivery must not stop the sender
            log.exception("delivery %s failed unexpectedly", delivery.id)
            error = f"{type(exc).__name__}: {exc}"
        attempts = delivery.attempts + 1
        now = self._clock()
        if error is None:
            done = replace(delivery, status=SENT, attempts=attempts, next_attempt_at=None)
        elif channel is None or attempts >= channel.retries:
            done = replace(
                delivery, status=FAILED, attempts=attempts, last_error=error, next_attempt_at=None
            )
            log.warning(
                "notification %s to %s via %s failed after %d attempt(s): %s",
                delivery.event,
                delivery.recipient,
                delivery.channel,
                attempts,
                error,
            )
        else:
            later = now + timedelta(seconds=channel.delay(attempts))
            done = replace(delivery, attempts=attempts, last_error=error, next_attempt_at=later)
        done = replace(done, updated_at=now)
        await self._records.call(rows.update_delivery, self._store, done)
        outcome = {SENT: "sent", FAILED: "failed"}.get(done.status, "retrying")
        self._tell_attempted(delivery.channel, outcome)
        if done.status == PENDING:
            self._schedule(done)
        await self._announce()

    def _tell_attempted(self, channel: str, outcome: str) -> None:
        """Every hook (metrics) hears how a delivery attempt ended; an unconfigured
        channel's name (from a job.json) is reported as ``unknown``."""
        name = channel if channel in self.channels else "unknown"
        for hook in self._hooks:
            try:
                hook.notification_attempted(name, outcome)
            except Exception:  # an observer's bug must not stop deliveries
                log.exception("hook %r failed on a delivery via %s", hook, name)

    # ------------------------------------------------------------- catalog
    def check_catalog(self, catalog: Catalog) -> None:
        """Warn (once each) about notify rules naming a channel not configured."""
        for job in catalog.values():
            if job.definition is not None:
                for warning in unknown_channels(job.definition.notify, self.channels):
                    self._warn_once(job.id, warning, f"{job.id}: {warning}")

    def _warn_once(self, job_id: str, key: str, message: str) -> None:
        if (job_id, key) not in self._warned:
            self._warned.add((job_id, key))
            log.warning("%s", message)

"""The few extension points, as Protocols in one place.

- ``Executor`` runs processes (local asyncio processes, or Celery workers).
- ``ExecutionEvents`` is what an executor reports back to; the engine implements it.
- ``Store`` keeps executions, audit, users, tokens and sessions (SQLite or PostgreSQL).
- ``Hook`` is the one typed seam for cross-cutting work (notifications, metrics).
- ``Records``, ``CatalogView``, ``SecretValues`` and ``JobStarter`` are the narrow views
  of the engine that the scheduler and the notifier are given (``jobhost.host`` wires them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from jobhost.models import (
    ApiToken,
    AuditEvent,
    AuditQuery,
    Execution,
    ExitInfo,
    HistoryQuery,
    LaunchSpec,
    Page,
    Principal,
    Session,
    Trigger,
    User,
)

if TYPE_CHECKING:
    from jobhost.catalog.discovery import Catalog

T = TypeVar("T")


class ExecutionEvents(Protocol):
    """Callbacks an executor makes, always on the engine's event loop."""

    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        """The process exists now."""

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        """More output was appended to the log; ``total_bytes`` is the logical size so far."""

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        """The script reported progress (``jobhost.job.progress``)."""

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        """The process is gone (or never started: ``info.error`` says why)."""


class Executor(Protocol):
    """Runs processes for executions and reports through ``ExecutionEvents``."""

    async def start(self, spec: LaunchSpec) -> None:
        """Launch ``spec``; return once it is handed over (``on_started`` follows)."""

    async def stop(self, execution_id: str, grace_seconds: float) -> None:
        """SIGTERM the process group, SIGKILL after ``grace_seconds``; no-op when gone."""

    async def terminate_orphan(self, execution: Execution) -> bool:
        """Reconciliation after a host crash: kill the process group a recorded run left
        behind (verified by pid and start time, never a recycled pid). True if one was found."""

    async def adopt(self, execution: Execution) -> bool:
        """Re-attach to a run that an earlier server process started with this data dir.
        True: from now on the executor reports on_output / on_progress / on_exited for it exactly
        as for a run it started itself (exit code, signal, CPU seconds, peak memory, also when the
        process ended while no server was up; output totals continue from the log's size).
        False: nothing of it is left to attach to (the caller records it lost)."""

    def adopted_secrets(self, execution_id: str) -> tuple[str, ...]:
        """The secret values an adopted run was launched with, so that what it stores
        (result, error, progress) is masked like a run started here; () when not known.
        Asked once, right after ``adopt`` returned True."""

    def exit_recorded(self, execution_id: str) -> None:
        """The run's end is durably recorded: an executor that keeps exits for adoption
        (the runner) may forget this one now. Called after the commit, never before: a
        server that dies in between leaves the exit for the next one to adopt."""

    async def aclose(self) -> None:
        """Release resources; running processes are left as they are."""


class Store(Protocol):
    """Durable state. Synchronous; the engine calls it through one bounded path."""

    def migrate(self) -> None:
        """Create or upgrade the schema (Alembic ``upgrade head``)."""

    def close(self) -> None: ...

    # executions
    def save_executions(self, executions: Sequence[Execution]) -> None:
        """Insert or replace these rows (by ``id``) in one transaction."""

    def save_batch(self, executions: Sequence[Execution], audit: Sequence[AuditEvent]) -> None:
        """Upsert ``executions`` and insert ``audit`` in one transaction (the journal's
        group commit: a start and the audit event that explains it land together)."""

    def get_execution(self, execution_id: str) -> Execution | None: ...

    def find_by_idempotency_key(self, user: str | None, key: str) -> Execution | None: ...

    def active_executions(self) -> list[Execution]:
        """Every execution not in a terminal status (for reconciliation)."""

    def history(self, query: HistoryQuery) -> Page[Execution]: ...

    def last_executions(self, job_ids: Sequence[str]) -> dict[str, Execution]:
        """The newest execution of each job that has one."""

    def prune(self, *, now: datetime, days: int | None, per_job: int | None) -> list[str]:
        """Delete terminal executions past retention; returns the deleted IDs (logs go too)."""

    # audit
    def add_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def audit(self, query: AuditQuery) -> Page[AuditEvent]: ...

    # users, tokens, sessions
    def get_user(self, username: str) -> User | None: ...

    def list_users(self) -> list[User]: ...

    def count_users(self) -> int: ...

    def save_user(self, user: User) -> None:
        """Insert or replace by username."""

    def delete_user(self, username: str) -> bool: ...

    def save_token(self, token: ApiToken) -> None: ...

    def get_token_by_hash(self, token_hash: str) -> ApiToken | None: ...

    def list_tokens(self, username: str | None) -> list[ApiToken]: ...

    def touch_token(self, token_id: str, at: datetime) -> None: ...

    def revoke_token(self, token_id: str) -> bool: ...

    def save_session(self, session: Session) -> None: ...

    def get_session(self, id_hash: str) -> Session | None: ...

    def delete_session(self, id_hash: str) -> None: ...

    def delete_user_sessions(self, username: str) -> None: ...


class Hook(Protocol):
    """Cross-cutting observers of the work (notifications, metrics). Must not block: each
    call runs on the event loop, inside the bookkeeping it reports on. Every method has a
    no-op default, so an observer subclasses ``Hook`` and overrides what it watches."""

    def execution_started(self, execution: Execution) -> None:
        """A run was recorded (``queued`` or ``starting``); its process follows."""
        return None

    def execution_running(self, execution: Execution) -> None:
        """The run's process exists now (``started_at`` is set)."""
        return None

    def execution_finished(self, execution: Execution, previous: Execution | None) -> None:
        """Called once per terminal execution, after it is stored; ``previous`` is the job's
        prior terminal execution (for ``recovered`` rules), when known."""
        return None

    def fire_missed(self, job_id: str, scheduled_for: datetime, reason: str) -> None:
        """A scheduled fire did not run (downtime past the grace, or skipped)."""
        return None

    def fire_settled(self, job_id: str, scheduled_for: datetime, outcome: str, count: int) -> None:
        """What became of ``count`` fires of a job, the newest due at ``scheduled_for``:
        ``started``, ``skipped``, ``failed``, ``missed`` or ``coalesced``."""
        return None

    def notification_attempted(self, channel: str, outcome: str) -> None:
        """A notification delivery ended an attempt: ``sent``, ``retrying`` or ``failed``."""
        return None


class Records(Protocol):
    """The one bounded path to the store (``Journal.call``)."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        ...


class CatalogView(Protocol):
    """The current catalog (replaced whole on every reload)."""

    @property
    def catalog(self) -> Catalog: ...


class SecretValues(Protocol):
    def secret_values(self, execution_id: str) -> list[str]:
        """The clear values of a live run's secret variables, for scrubbing what leaves
        the host; [] once the run is forgotten."""
        ...


class JobStarter(Protocol):
    """Starts a job (what the scheduler fires through: permission, variables, admission)."""

    async def start(
        self,
        job_id: str,
        variables: Mapping[str, Any] | None = None,
        principal: Principal = ...,
        *,
        trigger: Trigger | None = None,
        scheduled_for: datetime | None = None,
    ) -> Execution:
        """The run as recorded; raises ``Conflict``, ``Draining``... when refused."""
        ...

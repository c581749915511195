"""Plain typed values that services take and return: no I/O here.

Field names are the REST API's: ``Execution.to_api()`` is what the API, the CLI's
``--json`` and the UI all show.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def utcnow() -> datetime:
    """The default clock: an aware UTC datetime."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new execution/event ID: 32 hex characters, no structure to guess from."""
    return uuid.uuid4().hex


def iso(value: datetime | None) -> str | None:
    """UTC ISO-8601 with a ``Z``, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_SURROGATE = re.compile("[\ud800-\udfff]")


def readable(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (a lone surrogate becomes U+FFFD).

    Starts refuse such text, but a row stored before they did (or by another writer)
    must still read: this keeps one bad value from failing every page that shows it.
    """
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {readable(k): readable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable(item) for item in value]
    return value


class ExecutionStatus(StrEnum):
    """``queued → starting → running → succeeded | failed | stopped | timed_out``; or ``lost``;
    or ``rejected``: a scheduled start refused before it had a process (variables, init
    script), recorded so the fire shows in history with its reason; or ``scheduled``: a run
    due later (a retry's next attempt, a run-at start), held in the store until ``due_at``."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) a process: counts against ``max_concurrent``."""
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.STOPPED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.LOST,
        ExecutionStatus.REJECTED,
    }
)
ACTIVE_STATUSES = frozenset(
    {ExecutionStatus.STARTING, ExecutionStatus.RUNNING, ExecutionStatus.STOPPING}
)


class Trigger(StrEnum):
    """What started an execution."""

    USER = "user"  # a person, through the UI or the API with a session
    TOKEN = "token"  # an API token  # noqa: S105 - a trigger name, not a secret
    CLI = "cli"  # the local CLI, acting as local superuser
    SCHEDULE = "schedule"
    RESTART = "restart"  # the restart policy or the restart action
    RETRY = "retry"  # the next attempt of a batch run (job.json ``retry``)
    CHAIN = "chain"  # another run's ``on_success`` / ``on_failure``
    WEBHOOK = "webhook"  # POST /api/v1/hooks/{token}
    WATCH = "watch"  # a file appeared or changed (job.json "watch")


class Action(StrEnum):
    """What a user may do to a job; each has a ``roles_<action>`` list in job.json."""

    VIEW = "view"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SCHEDULE = "schedule"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a signed-in user, a token's owner, or the local CLI."""

    username: str
    roles: frozenset[str] = frozenset()
    superuser: bool = False  # resolved once from settings.superuser_roles

    @classmethod
    def local(cls) -> Principal:
        """The local CLI: whoever can run it can read the job files anyway."""
        import getpass

        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "local"
        return cls(username=name, roles=frozenset({"admin"}), superuser=True)


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of one job. Immutable: a transition makes a new value (``evolve``)."""

    id: str
    job_id: str
    status: ExecutionStatus
    trigger: Trigger
    user: str | None
    variables: dict[str, Any] = field(default_factory=dict)  # secrets already redacted
    test: bool = False
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    result: Any = None
    error: str | None = None  # why it failed/was lost, in words
    pid: int | None = None
    host: str | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    output_bytes: int = 0
    progress: float | None = None
    progress_message: str | None = None
    idempotency_key: str | None = None
    restart_count: int = 0
    scheduled_for: datetime | None = None  # the fire time, for trigger=schedule
    owner: str | None = None  # the instance (``Instance.id``) whose lease covers this run
    # What the request with ``idempotency_key`` asked for (a digest of job, test flag and
    # variables): a key reused for another request is refused.
    request_fingerprint: str | None = None
    # Who or what ended it early: a user ("alice", "alice (token ci)"), "timeout",
    # "server shutdown", "replaced by a newer run"; None when nobody stopped it.
    stopped_by: str | None = None
    # Run policies (jobhost.execution.retry, .due, .concurrency; jobhost.chains).
    attempt: int = 1  # 1 for a first run; the retry policy's next attempts count on
    retry_of: str | None = None  # the first attempt, on every later attempt
    next_attempt: str | None = None  # on a run that will be retried: the scheduled attempt
    due_at: datetime | None = None  # when a ``scheduled`` run is due
    triggered_by: str | None = None  # the run whose on_success / on_failure started this one
    chained: tuple[str, ...] = ()  # the runs this one's on_success / on_failure started
    queue_position: int | None = None  # 1 = next to start, while ``queued``
    # Started with --dry-run: the script gets JOBHOST_DRY_RUN=1 and is expected to change
    # nothing (the examples report what they would do).
    dry_run: bool = False

    def evolve(self, **changes: Any) -> Execution:
        return dataclasses.replace(self, **changes)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    def to_api(self) -> dict[str, Any]:
        """The JSON shape used by the REST API, the CLI's ``--json`` and the UI."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "trigger": self.trigger.value,
            "user": self.user,
            "variables": readable(self.variables),
            "result": readable(self.result),
            "error": readable(self.error),
            "test": self.test,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "pid": self.pid,
            "host": self.host,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "output_bytes": self.output_bytes,
            "progress": self.progress,
            "progress_message": readable(self.progress_message),
            "restart_count": self.restart_count,
            "scheduled_for": iso(self.scheduled_for),
            "owner": self.owner,
            "stopped_by": self.stopped_by,
            "attempt": self.attempt,
            "retry_of": self.retry_of,
            "next_attempt": self.next_attempt,
            "due_at": iso(self.due_at),
            "triggered_by": self.triggered_by,
            "chained": list(self.chained),
            "queue_position": self.queue_position,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True, slots=True)
class Instance:
    """A process that opened the store and owns the runs it started, for as long as it
    renews its lease (``jobhost.execution.lease``)."""

    id: str
    host: str
    pid: int
    kind: str  # "server" or "cli"
    started_at: datetime
    lease_expires_at: datetime
    draining: bool = False
    # Where other servers reach it (output of its runs, README "Scaling out"), and the data
    # dir whose logs it serves; None for instances that serve no HTTP (the local CLI).
    url: str | None = None
    data_dir: str | None = None

    def alive(self, now: datetime) -> bool:
        return self.lease_expires_at > now

    def evolve_lease(self, expires: datetime, draining: bool | None = None) -> Instance:
        return dataclasses.replace(
            self,
            lease_expires_at=expires,
            draining=self.draining if draining is None else draining,
        )

    def describe(self) -> str:
        """How messages name it: ``server 3f2a… (pid 812 on web-1)``."""
        return f"{self.kind} {self.id[:8]} (pid {self.pid} on {self.host})"

    def to_api(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "kind": self.kind,
            "started_at": iso(self.started_at),
            "lease_expires_at": iso(self.lease_expires_at),
            "alive": self.alive(now),
            "draining": self.draining,
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Filters for history; newest first; ``cursor`` is the opaque ``next_cursor`` of a page."""

    job_id: str | None = None
    user: str | None = None
    statuses: tuple[ExecutionStatus, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None
    # Permission scope, set by the engine (never from user input): when not None, only
    # executions of these jobs, or started by ``visible_user``, are returned.
    visible_job_ids: frozenset[str] | None = None
    visible_user: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail: who did what to which target, and how it went."""

    action: str  # e.g. "job.start", "auth.login", "token.create", "user.update"
    user: str | None
    target: str | None = None
    outcome: str = "ok"  # "ok" | "denied" | "failed"
    address: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    id: str = field(default_factory=new_id)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "action": self.action,
            "user": self.user,
            "target": self.target,
            "outcome": self.outcome,
            "address": self.address,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class AuditQuery:
    user: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    roles: frozenset[str] = frozenset()
    disabled: bool = False
    created_at: datetime = field(default_factory=utcnow)

    def to_api(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "roles": sorted(self.roles),
            "disabled": self.disabled,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token; only its hash is stored, the clear value is shown once."""

    id: str
    username: str
    name: str
    token_hash: str
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked: bool = False

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A browser session; the cookie holds ``id`` in clear, the store keeps its hash."""

    id_hash: str
    username: str
    csrf_token: str
    expires_at: datetime
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """A run's resource limits in plain units (job.json's ``limits`` over the settings')."""

    memory_max_bytes: int | None = None
    cpu_quota_percent: float | None = None  # 150.0: one and a half CPUs
    cpu_weight: int | None = None  # 1-10,000, 100 by default (cgroup v2's scale)
    pids_max: int | None = None
    nice: int | None = None
    open_files: int | None = None


NO_LIMITS = ResourceLimits()


@dataclass(frozen=True, slots=True)
class RunAs:
    """The Unix account a run uses (names; resolved to ids on the machine that spawns)."""

    user: str
    group: str | None = None  # None: the user's primary group
    umask: int = 0o022


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything an executor needs to run one execution; built by the engine."""

    execution_id: str
    job_id: str
    argv: list[str]  # argv[0] is the program; never passed through a shell
    cwd: str  # the job folder
    env: dict[str, str]  # the complete environment of the child
    log_path: str  # where output is written as it is produced
    result_path: str  # JOBHOST_RESULT_PATH
    timeout_seconds: float | None = None
    stop_grace_seconds: float = 10.0
    max_output_bytes: int = 16 * 1024 * 1024
    queue: str | None = None  # worker routing (celery)
    # The clear values of the run's secret variables: the output writer masks them.
    secrets: tuple[str, ...] = ()
    limits: ResourceLimits = NO_LIMITS
    run_as: RunAs | None = None

    def __post_init__(self) -> None:
        # A spec sent to a Celery worker arrives as ``asdict`` output: nested plain dicts.
        if isinstance(self.limits, dict):
            object.__setattr__(self, "limits", ResourceLimits(**self.limits))
        if isinstance(self.run_as, dict):
            object.__setattr__(self, "run_as", RunAs(**self.run_as))


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended, from the kernel's accounting (``os.wait4``)."""

    exit_code: int | None  # None when killed by a signal
    exit_signal: int | None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    output_bytes: int = 0
    timed_out: bool = False
    stopped: bool = False  # ended because stop() was called
    error: str | None = None  # the process could not be started, or the worker vanished
    lost: bool = False  # nobody can say how it ended (its worker stopped answering)


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Bytes of an execution's output from ``offset``; ``next_offset`` is where to read next.

    ``done`` is True when the execution has ended and nothing follows ``next_offset``.
    """

    data: bytes
    offset: int
    next_offset: int
    done: bool
    # Character ranges of the decoded ``data`` that the job wrote to stderr.
    stderr: tuple[tuple[int, int], ...] = ()

    def to_api(self) -> dict[str, Any]:
        return {
            "output": self.data.decode("utf-8", errors="replace"),
            "offset": self.offset,
            "next_offset": self.next_offset,
            "done": self.done,
            "stderr": [list(span) for span in self.stderr],
        }


# ------------------------------------------------------------------ schedules
class FireOutcome(StrEnum):
    """What became of a scheduled fire (``schedule_fires.outcome``; NULL while claimed)."""

    STARTED = "started"
    SKIPPED = "skipped"  # overlap, a rate limit, or the server draining
    FAILED = "failed"  # could not start; a rejected run tells why when there is one
    MISSED = "missed"  # fell into downtime, beyond the misfire grace
    COALESCED = "coalesced"  # missed, but a newer fire of the same gap ran


@dataclass(frozen=True, slots=True)
class Override:
    """A stored change to a job's schedule; a None field keeps job.json's value."""

    job_id: str
    schedule: str | None = None
    enabled: bool | None = None
    variables: dict[str, Any] | None = None
    timezone: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Fire:
    """One claimed (or missed) fire; ``status`` is its execution's status, when there is one."""

    job_id: str
    scheduled_for: datetime
    outcome: str | None
    reason: str | None
    execution_id: str | None
    recorded_at: datetime
    status: str | None = None


@dataclass(frozen=True, slots=True)
class FireResult:
    """How a claimed fire went, as recorded."""

    job_id: str
    scheduled_for: datetime
    outcome: FireOutcome
    reason: str | None = None
    execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A stop or restart sent to one server for a run another server owns: kept in the
    store until the owner answers it (``jobhost.execution.forwarding``)."""

    id: str
    execution_id: str
    action: str  # "stop" or "restart"
    username: str  # who asked (audited on the server that took the request)
    roles: frozenset[str]
    superuser: bool
    sender: str  # the instance that took the request and waits for the answer
    created_at: datetime
    variables: dict[str, Any] | None = None  # a restart's new variables (never secret ones)
    stopped_by: str | None = None  # how the stopped run records who stopped it
    handled_at: datetime | None = None
    # {"execution": id} once done, or {"error": {"code", "message", "details"}}.
    answer: dict[str, Any] | None = None

    @property
    def principal(self) -> Principal:
        return Principal(username=self.username, roles=self.roles, superuser=self.superuser)

"""The API's response models: the OpenAPI document declares them, and ``jobhost.client``
parses answers into them.

The routes still build plain dicts (``Execution.to_api()`` and friends) and send them as
they are: ``answers(Model)`` documents a route's body without re-validating it on every
request, and the contract test (tests/test_openapi.py) checks real answers of every route
against the document. Every field a server sends is declared and required (``None``
where it may be null); a field a newer server adds is allowed and kept by parsers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobhost.models import ExecutionStatus, Trigger


class Model(BaseModel):
    """Answers may carry fields added after this version: they are kept, not refused."""

    model_config = ConfigDict(extra="allow")


def answers(model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    """Route decorator arguments that document ``model`` as the answer for ``status``."""
    description = (model.__doc__ or model.__name__).strip().splitlines()[0]
    return {
        "response_model": None,
        "status_code": status,
        "responses": {status: {"model": model, "description": description}},
    }


# ---------------------------------------------------------------- errors
class ErrorDetail(Model):
    code: str = Field(description="Stable, machine-readable: not_found, invalid_variables, …")
    message: str = Field(description="What went wrong and how to fix it, with the values")
    details: Any = Field(description="Per-field problems or context (e.g. the running IDs)")


class ErrorBody(Model):
    """Every error the server sends, whatever its status."""

    error: ErrorDetail


# ---------------------------------------------------------------- executions
class ExecutionOut(Model):
    """One run of one job."""

    id: str
    job_id: str
    status: ExecutionStatus
    exit_code: int | None
    exit_signal: int | None
    trigger: Trigger
    user: str | None
    variables: dict[str, Any] = Field(description="As started; secret values shown as ***")
    result: Any = Field(description="What the script wrote to JOBHOST_RESULT_PATH (JSON)")
    error: str | None
    test: bool
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    pid: int | None
    host: str | None
    cpu_seconds: float | None
    peak_rss_bytes: int | None
    output_bytes: int
    progress: float | None
    progress_message: str | None
    restart_count: int
    dry_run: bool = Field(description="Started as a dry run: the script got JOBHOST_DRY_RUN=1")
    scheduled_for: datetime | None
    stopped_by: str | None = Field(
        None,
        description="Who or what stopped it: a user (with the token's name when a token "
        "was used), timeout, server shutdown, or a newer run that replaced it",
    )
    attempt: int = Field(description="1 for a first run; retries count on")
    retry_of: str | None = Field(description="The first attempt, on every later attempt")
    next_attempt: str | None = Field(description="The scheduled retry of this attempt, if any")
    due_at: datetime | None = Field(description="When a scheduled run starts")
    triggered_by: str | None = Field(description="The run whose on_success/on_failure started it")
    chained: list[str] = Field(description="The runs its on_success/on_failure started")
    queue_position: int | None = Field(description="1 = next to start, while queued")


class ExecutionList(Model):
    """Executions (running ones, or those a stop reached)."""

    executions: list[ExecutionOut]


class HistoryPage(Model):
    """A page of history, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    executions: list[ExecutionOut]
    next_cursor: str | None


class OutputOut(Model):
    """Output bytes from ``offset`` (UTF-8, invalid bytes replaced); read on at ``next_offset``."""

    output: str
    offset: int
    next_offset: int
    done: bool = Field(description="The run has ended and nothing follows next_offset")
    stderr: list[tuple[int, int]] = Field(
        default_factory=list,
        description="Character ranges [start, end) of output that the job wrote to stderr "
        "(the rest is stdout)",
    )


class OutputEvent(Model):
    """The data of an ``output`` event (its SSE ``id`` is ``next_offset``)."""

    output: str
    offset: int
    next_offset: int
    stderr: list[tuple[int, int]] = Field(
        default_factory=list,
        description="Character ranges [start, end) of output that the job wrote to stderr "
        "(the rest is stdout)",
    )


# ---------------------------------------------------------------- catalog
class VariableOut(Model):
    name: str
    description: str
    type: str
    default: Any = Field(description="*** for a secret variable's default")
    required: bool
    pattern: str | None
    choices: list[Any] | None
    min: float | None
    max: float | None
    secret: bool
    choices_from: dict[str, Any] | None = Field(
        description="The script that lists the choices; the job detail fills choices from it"
    )
    choices_error: str | None = Field(
        default=None, description="Job detail only: why choices_from could not list them"
    )


class JobOut(Model):
    """A job of the catalog, with what the caller may do to it."""

    id: str
    app: str
    job: str
    name: str
    description: str
    valid: bool
    errors: list[str]
    warnings: list[str]
    schedule: str | None
    variables: list[VariableOut]
    roles: dict[str, list[str] | None]
    timeout_seconds: float | None
    max_concurrent: int | None
    on_conflict: str | None
    restart: str | None
    enabled: bool
    has_init_script: bool
    webhook: dict[str, Any] | None = Field(
        description="job.json's webhook rules (enabled, signature, rate_per_minute), or null"
    )
    extra_fields: dict[str, Any]
    permissions: dict[str, bool]
    next_fire: datetime | None
    timezone: str | None = Field(
        None,
        description="The job's own time zone: its schedule's, else job.json's, else the "
        "server's default",
    )


class CatalogOut(Model):
    """The jobs the caller may view."""

    jobs: list[JobOut]
    count: int


class JobDetailOut(JobOut):
    """One job and its 10 newest runs."""

    recent: list[ExecutionOut]


class PlanFire(Model):
    at: datetime = Field(description="The fire time, UTC")
    local: str = Field(description="The same time in the schedule's zone, ISO-8601 with offset")


class PlanSchedule(Model):
    expression: str | None
    timezone: str
    source: str = Field(description="job.json, override or none")
    enabled: bool
    problem: str | None
    next: list[PlanFire] = Field(description="The next 5 fires (empty when not scheduled)")


class PlanInit(Model):
    script: str | None
    verdict: str = Field(description="none (no init script), accepted or rejected")
    message: str | None


class PlanAdmission(Model):
    verdict: str = Field(description="start, queue or reject")
    reason: str
    position: int | None = Field(description="Place in the job's queue (1 = next) when queued")


class PlanOut(Model):
    """What a start of the job would do now, without starting it."""

    job_id: str
    schedule: PlanSchedule
    variables: dict[str, Any] = Field(description="After defaults and the init script; *** secrets")
    init: PlanInit
    argv: list[str] | None = Field(description="None when the variables are refused")
    cwd: str
    env: dict[str, str] | None = Field(description="The whole environment; secrets as ***")
    limits: dict[str, Any] | None
    problems: list[str]
    admission: PlanAdmission


class HookOut(Model):
    """A job's webhook (never its URL: that is shown once, when made)."""

    job_id: str
    exists: bool
    created_by: str | None
    created_at: datetime | None
    signature: str | None = Field(description="hmac-sha256 when calls must be signed")
    rate_per_minute: int | None


class NewHookOut(HookOut):
    """A new or rotated webhook: its URL and signing secret, shown this once."""

    token: str
    url_path: str = Field(description="POST here (relative to the server's URL)")
    signing_secret: str | None = Field(
        description="Key of the X-Hub-Signature-256 HMAC; null when calls need no signature"
    )


class SamplesOut(Model):
    """The newest JSON lines of the job's samples.jsonl."""

    samples: list[Any]


class InvalidJob(Model):
    id: str
    errors: list[str]


class ReloadOut(Model):
    """The catalog after a rescan."""

    count: int
    invalid: list[InvalidJob]


# ---------------------------------------------------------------- schedules
class LastFire(Model):
    scheduled_for: datetime
    execution_id: str | None
    status: str | None
    outcome: str | None


class ScheduleOut(Model):
    """A job's schedule in force, where it comes from, and its next fires."""

    job_id: str
    schedule: str | None
    timezone: str
    enabled: bool
    source: str = Field(description="job.json, override or none")
    variables: dict[str, Any]
    next_fires: list[datetime]
    last_fire: LastFire | None
    can_edit: bool


class ScheduleList(Model):
    """Every job the caller may view, with its schedule."""

    schedules: list[ScheduleOut]


class PreviewOut(Model):
    """The next fire times of an expression."""

    next_fires: list[datetime]


# ---------------------------------------------------------------- notifications
class DeliveryOut(Model):
    id: str
    execution_id: str | None
    job_id: str
    rule_index: int
    event: str
    channel: str
    recipient: str
    status: str = Field(description="pending, sent or failed")
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryList(Model):
    """Who was notified about a run, and how it went."""

    deliveries: list[DeliveryOut]


# ---------------------------------------------------------------- identity
class SignedIn(Model):
    """The signed-in user; ``csrf_token`` goes in ``X-CSRF-Token`` on every write."""

    username: str
    roles: list[str]
    superuser: bool
    csrf_token: str


class Me(Model):
    """The caller; ``csrf_token`` only when signed in with a session cookie."""

    username: str
    roles: list[str]
    superuser: bool
    csrf_token: str | None = None


class PasswordChanged(Model):
    """Your password changed; your other sessions were signed out."""

    username: str
    changed: bool
    message: str


class TokenOut(Model):
    id: str
    username: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


class TokenList(Model):
    """API tokens (never their values)."""

    tokens: list[TokenOut]


class NewToken(Model):
    """A new API token; ``token`` is shown this once."""

    id: str
    name: str
    token: str
    expires_at: datetime | None


class UserOut(Model):
    """A user account (never its password hash)."""

    username: str
    roles: list[str]
    disabled: bool
    created_at: datetime


class UserList(Model):
    """Every user."""

    users: list[UserOut]


class AuditEventOut(Model):
    id: str
    at: datetime
    action: str
    user: str | None
    target: str | None
    outcome: str
    address: str | None
    details: dict[str, Any]


class AuditPage(Model):
    """A page of the audit trail, newest first."""

    events: list[AuditEventOut]
    next_cursor: str | None


class Health(Model):
    """Liveness and a few counts."""

    status: str
    jobs: int
    invalid_jobs: int
    running: int


# ---------------------------------------------------------------- legacy (the seed's shapes)
class LegacyAnswer(Model):
    success: bool
    timestamp: datetime | None


class LegacyJob(Model):
    id: str
    name: str
    state: str
    hasMoreData: bool
    location: str | None
    command: str
    startTime: datetime | None
    runningTime: float | None
    taskName: str
    appName: str
    childJobs: list[Any]


class LegacyJobs(LegacyAnswer):
    """Running executions and the most recent ended ones (the seed's shape)."""

    jobs: list[LegacyJob]
    count: int
    running: int
    completed: int
    failed: int


class LegacyCatalog(LegacyAnswer):
    """The catalog in the seed's shape."""

    jobs: list[dict[str, Any]]
    count: int
    userRoles: list[str]


class LegacyStarted(LegacyAnswer):
    """A started job (the seed's shape)."""

    message: str
    jobId: str
    executionId: str
    status: str


class LegacyStopped(LegacyAnswer):
    """A queued stop (the seed's shape)."""

    message: str
    jobId: str
    executionIds: list[str]
    status: str


class LegacyResults(LegacyAnswer):
    """Ended executions and ad-hoc commands, newest first (the seed's shape)."""

    results: list[dict[str, Any]]
    count: int


class LegacyOutput(LegacyAnswer):
    """Output of an execution or an ad-hoc command (the seed's shape)."""

    jobId: str
    output: str
    runtime: float | None
    state: str
    message: str


class LegacySubmitted(LegacyAnswer):
    """A submitted ad-hoc command (the seed's shape)."""

    jobId: str
    message: str
    executionMode: str
    status: str

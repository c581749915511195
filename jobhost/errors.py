"""One exception tree for every error a user can cause.

Each class carries the HTTP status and the CLI exit code it maps to, in this one
place; the server and the CLI read ``status_code``/``exit_code``/``code`` and never
decide on their own.
"""

from __future__ import annotations

from typing import Any, ClassVar


class JobHostError(Exception):
    """Base of all JobHost errors; ``message`` is written for the person who caused it."""

    code: ClassVar[str] = "error"
    status_code: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    retry_after_seconds: ClassVar[int | None] = None  # sent as ``Retry-After`` when set

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The API's error body: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(JobHostError, ValueError):
    """Malformed input (bad JSON, bad ID shape, bad query)."""

    code = "bad_request"
    status_code = 400
    exit_code = 2


class InvalidDefinition(JobHostError, ValueError):
    """A job.json (or its folder) is invalid; ``details`` lists every problem."""

    code = "invalid_definition"
    status_code = 422
    exit_code = 3


class VariableError(JobHostError, ValueError):
    """Variables were rejected; ``details`` maps variable name → message."""

    code = "invalid_variables"
    status_code = 422
    exit_code = 2


class InvalidSchedule(JobHostError, ValueError):
    """A cron expression or time zone could not be parsed."""

    code = "invalid_schedule"
    status_code = 422
    exit_code = 2


class IdempotencyKeyReused(JobHostError, ValueError):
    """An ``Idempotency-Key`` came back with a different request than the first time."""

    code = "idempotency_key_reused"
    status_code = 422
    exit_code = 2


class InitHookFailed(JobHostError):
    """The job's init-job script rejected the start (non-zero exit or bad output)."""

    code = "init_failed"
    status_code = 422
    exit_code = 2


class NotAuthenticated(JobHostError):
    """No valid session or token."""

    code = "not_authenticated"
    status_code = 401
    exit_code = 4


class PermissionDenied(JobHostError, PermissionError):
    """The user is signed in but their roles do not allow the action."""

    code = "forbidden"
    status_code = 403
    exit_code = 4


class NotFound(JobHostError, LookupError):
    """Something the user named does not exist (or is not visible to them)."""

    code = "not_found"
    status_code = 404
    exit_code = 5


class JobNotFound(NotFound):
    """No job by that ID in the catalog."""


class ExecutionNotFound(NotFound):
    """No execution by that ID."""


class Conflict(JobHostError):
    """The action clashes with current state (e.g. ``max_concurrent`` reached with ``reject``)."""

    code = "conflict"
    status_code = 409
    exit_code = 6


class PayloadTooLarge(JobHostError):
    """A request body over the configured limit."""

    code = "payload_too_large"
    status_code = 413
    exit_code = 2


class TooManyRequests(JobHostError):
    """A rate limit or a full command queue; retry after ``retry_after`` seconds."""

    code = "too_many_requests"
    status_code = 429
    exit_code = 7
    retry_after_seconds = 1

    def __init__(self, message: str, *, details: Any = None, retry_after: int = 1) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, retry_after)


class Draining(JobHostError):
    """The server is draining for an upgrade: it starts nothing new; retry on another
    server, or here once it is resumed."""

    code = "draining"
    status_code = 503
    exit_code = 8
    retry_after_seconds = 30


class OwnerUnavailable(JobHostError):
    """Another server owns what the request needs (a run's process, or its log) and
    cannot be reached or did not answer in time."""

    code = "owner_unavailable"
    status_code = 503
    exit_code = 8
    retry_after_seconds = 5

"""How a process's end becomes a run's final status: a pure mapping, first match wins."""

from __future__ import annotations

from jobhost.models import ExecutionStatus, ExitInfo


def exit_status(info: ExitInfo) -> ExecutionStatus:
    """``lost`` (nothing left to follow) before an error (it never ran, or could not be
    followed), before a timeout, before a stop (a stop that timed out is a timeout), then
    the exit code: 0 succeeded, anything else (a signal included) failed."""
    if info.lost:
        return ExecutionStatus.LOST
    if info.error:
        return ExecutionStatus.FAILED
    if info.timed_out:
        return ExecutionStatus.TIMED_OUT
    if info.stopped:
        return ExecutionStatus.STOPPED
    if info.exit_code == 0:
        return ExecutionStatus.SUCCEEDED
    return ExecutionStatus.FAILED


def timeout_message(limit_seconds: float | None) -> str:
    return f"Timed out after {limit_seconds} s"

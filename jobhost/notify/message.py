"""What a notification says: the job, the run, who started it, how it ended, the end of
its output and a link to it.

Built once, when the rule fires, and stored with the delivery (``payload``), so a
retry after a restart sends the same words. Output is bounded (the last
``TAIL_LINES`` lines of at most ``TAIL_BYTES``) and every known secret value is
replaced by ``***``; variables appear only in their stored, already redacted form.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from jobhost.config import Settings
from jobhost.execution.launch import log_path
from jobhost.execution.output import read_output
from jobhost.models import Execution, iso

TAIL_LINES = 20
TAIL_BYTES = 4 * 1024
REDACTED = "***"

_OUTCOME = {
    "failed": "failed",
    "timed_out": "timed out",
    "lost": "was lost",
    "succeeded": "succeeded",
    "recovered": "recovered",
    "retrying": "failed; retrying",
}


def base_url(settings: Settings) -> str:
    """Where the UI is reached from outside: ``public_url``, else the bind address."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}"


def execution_link(settings: Settings, execution_id: str) -> str:
    return f"{base_url(settings)}/#/executions/{execution_id}"


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value replaced (longest first, so a
    secret that contains another is not half-revealed)."""
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def output_tail(settings: Settings, execution: Execution, secrets: Iterable[str] = ()) -> str:
    """The last lines of the run's output, redacted; empty when it printed nothing."""
    path = str(log_path(settings, execution.id))
    start = max(0, execution.output_bytes - TAIL_BYTES)
    data, _ = read_output(path, start, TAIL_BYTES)
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut somewhere in the middle
    return redact_text("\n".join(lines[-TAIL_LINES:]), secrets)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


def subject_for(event: str, execution: Execution) -> str:
    """``[JobHost] Maintenance/DatabaseBackup failed (exit 1)``."""
    outcome = _OUTCOME.get(event, event)
    detail = ""
    if execution.exit_code is not None and execution.exit_code != 0:
        detail = f" (exit {execution.exit_code})"
    elif execution.exit_signal is not None:
        detail = f" (signal {execution.exit_signal})"
    return f"[JobHost] {execution.job_id} {outcome}{detail}"


def _started_by(execution: Execution) -> str:
    if execution.trigger.value == "schedule":
        return f"the schedule (fire of {iso(execution.scheduled_for) or '-'})"
    if execution.user:
        return f"{execution.user} ({execution.trigger.value})"
    return execution.trigger.value


def execution_message(
    settings: Settings,
    event: str,
    execution: Execution,
    *,
    job_name: str,
    tail: str,
    attachments: list[str],
) -> dict[str, Any]:
    """The stored payload of a run's notification: subject, plain text and facts."""
    link = execution_link(settings, execution.id)
    exit_text = "-" if execution.exit_code is None else str(execution.exit_code)
    if execution.exit_signal is not None:
        exit_text = f"signal {execution.exit_signal}"
    lines = [
        f"Job:        {execution.job_id} ({job_name})" if job_name else f"Job: {execution.job_id}",
        f"Outcome:    {_OUTCOME.get(event, event)} (status {execution.status.value})",
        f"Execution:  {execution.id}",
        f"Started by: {_started_by(execution)}",
        f"Started:    {iso(execution.started_at) or '-'}",
        f"Ended:      {iso(execution.ended_at) or '-'}",
        f"Duration:   {_duration(execution.duration_seconds)}",
        f"Exit code:  {exit_text}",
    ]
    if execution.error:
        lines.append(f"Error:      {execution.error}")
    if execution.variables:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(execution.variables.items()))
        lines.append(f"Variables:  {shown}")
    lines += ["", f"Open it: {link}", ""]
    if tail:
        lines += [f"Last {TAIL_LINES} lines of output:", "", tail, ""]
    else:
        lines += ["(no output)", ""]
    return {
        "event": event,
        "job_id": execution.job_id,
        "job_name": job_name,
        "subject": subject_for(event, execution),
        "text": "\n".join(lines),
        "link": link,
        "output_tail": tail,
        "attachments": attachments,
        "execution": execution.to_api(),
    }


def missed_message(
    settings: Settings, job_id: str, scheduled_for: datetime, reason: str
) -> dict[str, Any]:
    """The stored payload of a ``missed`` notification (no execution exists)."""
    when = iso(scheduled_for)
    link = f"{base_url(settings)}/#/jobs/{job_id}"
    text = "\n".join(
        [
            f"Job:       {job_id}",
            f"Scheduled: {when}",
            f"Outcome:   did not run: {reason}",
            "",
            f"Open it: {link}",
            "",
        ]
    )
    return {
        "event": "missed",
        "job_id": job_id,
        "job_name": "",
        "subject": f"[JobHost] {job_id} missed its scheduled run of {when}",
        "text": text,
        "link": link,
        "output_tail": "",
        "attachments": [],
        "scheduled_for": when,
        "reason": reason,
        "execution": None,
    }


def contained_files(candidates: Any, root: Path) -> list[str]:
    """The paths in ``candidates`` (a job result's ``attachments``) that resolve to
    existing files inside ``root`` (the job's state dir); anything else is ignored, so a
    job cannot mail out arbitrary files of the host."""
    if not isinstance(candidates, list):
        return []
    base = root.resolve()
    found: list[str] = []
    for item in candidates:
        if not isinstance(item, str) or not item:
            continue
        path = (base / item).resolve()
        if path.is_relative_to(base) and path.is_file():
            found.append(str(path))
    return found

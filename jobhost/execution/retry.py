"""Retries of batch runs (job.json ``retry``): whether an ended run gets another attempt,
after how long, and the ``scheduled`` row that stands for that attempt until it is due.

Pure functions over typed values; the supervisor records the row and hands it to the due
runs (``jobhost.execution.due``), which start it when its time comes.

Backoff: ``backoff_seconds * 2 ** (attempt - 1)``, capped at ``max_backoff_seconds``, with
"equal jitter" (half of it fixed, half drawn at random), so that runs failing together
(a database that went away) do not all come back in the same second, and no attempt
comes sooner than half its backoff.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from jobhost.catalog.policies import RetryPolicy
from jobhost.models import Execution, ExecutionStatus, Trigger, new_id


def retry_delay(policy: RetryPolicy, ended: Execution, rng: random.Random) -> float | None:
    """Seconds until the next attempt of ``ended``, or None when it is final."""
    if ended.test or ended.status.value not in policy.on or ended.attempt >= policy.attempts:
        return None
    if (
        ended.status is ExecutionStatus.FAILED
        and policy.on_exit_codes
        and ended.exit_code not in policy.on_exit_codes
    ):
        return None
    growth: float = 2.0 ** (ended.attempt - 1)
    backoff = min(policy.max_backoff_seconds, policy.backoff_seconds * growth)
    return backoff / 2 + rng.uniform(0, backoff / 2)


def next_attempt(ended: Execution, delay: float, now: datetime, owner: str | None) -> Execution:
    """The ``scheduled`` row of the attempt after ``ended``, due ``delay`` seconds from now."""
    return Execution(
        id=new_id(),
        job_id=ended.job_id,
        status=ExecutionStatus.SCHEDULED,
        trigger=Trigger.RETRY,
        user=ended.user,
        variables=dict(ended.variables),
        created_at=now,
        due_at=now + timedelta(seconds=delay),
        attempt=ended.attempt + 1,
        retry_of=ended.retry_of or ended.id,
        triggered_by=ended.triggered_by,
        owner=owner,
    )

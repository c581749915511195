"""The restart policy for daemon-style jobs: backoff with jitter, a cap, a stable-run reset,
and a brake so a crashing daemon never loops hot. Pure functions; the clock is passed in."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobhost.models import Execution, ExecutionStatus

BASE_DELAY_SECONDS = 1.0


def wants_restart(policy: str, execution: Execution) -> bool:
    """``always`` restarts after any end but a stop; ``on-failure`` after failed/timed_out."""
    if execution.test or execution.status is ExecutionStatus.STOPPED:
        return False
    if policy == "always":
        return True
    if policy == "on-failure":
        return execution.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)
    return False


@dataclass
class RestartTracker:
    """Per-job memory of quick failures; one instance per job with a restart policy."""

    window_seconds: float = 60.0
    burst: int = 5
    max_backoff_seconds: float = 300.0
    quick_ends: deque[datetime] = field(default_factory=deque)
    consecutive: int = 0

    def next_delay(self, execution: Execution, now: datetime, rng: random.Random) -> float | None:
        """Seconds to wait before the restart, or None when the brake gives up."""
        ran = execution.duration_seconds or 0.0
        if ran >= self.window_seconds:
            # A run that stayed up for a whole window was stable: start counting afresh.
            self.consecutive = 0
            self.quick_ends.clear()
            return BASE_DELAY_SECONDS * rng.uniform(0.5, 1.0)
        self.consecutive += 1
        self.quick_ends.append(now)
        horizon = now - timedelta(seconds=self.window_seconds)
        while self.quick_ends and self.quick_ends[0] < horizon:
            self.quick_ends.popleft()
        if len(self.quick_ends) >= self.burst:
            return None
        delay: float = min(
            self.max_backoff_seconds, BASE_DELAY_SECONDS * 2.0 ** (self.consecutive - 1)
        )
        # Full jitter on the upper half keeps a fleet of daemons from restarting in lockstep.
        return delay * rng.uniform(0.5, 1.0)

"""The restart policy for daemon-style jobs: backoff with jitter, a cap, a stable-run reset,
and a brake so a crashing daemon never loops hot (pure: the clock is passed in); and the
timers that carry it out, one per run lineage (a run and the restarts that followed it),
so two runs of one job that crash each get their own restart and brake."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobhost.catalog.definition import JobDefinition
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


class RestartTimers:
    """Pending restarts by lineage: which lineage each live run belongs to, its brake, and
    its timer. All methods run on the event loop."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lineage: dict[str, str] = {}  # live execution ID → its lineage's first ID
        self._trackers: dict[str, RestartTracker] = {}  # by lineage
        self._timers: dict[str, tuple[str, asyncio.TimerHandle]] = {}  # lineage → job, timer

    def link(self, execution_id: str, lineage: str) -> None:
        """``execution_id`` continues ``lineage`` (the first run of its restart chain)."""
        self._lineage[execution_id] = lineage

    def forget(self, execution_id: str) -> None:
        self._lineage.pop(execution_id, None)

    def after_end(
        self,
        final: Execution,
        definition: JobDefinition | None,
        now: datetime,
        fire: Callable[[str], None],
    ) -> RestartTracker | None:
        """Set the lineage's timer when ``definition.restart`` wants ``final`` restarted:
        ``fire(lineage)`` is called when it is due. Returns the tracker when its brake
        gave up instead (the caller notes why on the run); None otherwise."""
        lineage = self._lineage.pop(final.id, final.id)
        if definition is None or not wants_restart(definition.restart, final):
            self._trackers.pop(lineage, None)
            return None
        tracker = self._trackers.setdefault(
            lineage,
            RestartTracker(
                window_seconds=definition.restart_window_seconds,
                burst=definition.restart_burst,
                max_backoff_seconds=definition.restart_max_backoff_seconds,
            ),
        )
        delay = tracker.next_delay(final, now, self._rng)
        if delay is None:
            self._trackers.pop(lineage, None)
            return tracker

        def due() -> None:
            self._timers.pop(lineage, None)
            fire(lineage)

        timer = asyncio.get_running_loop().call_later(delay, due)
        self._timers[lineage] = (final.job_id, timer)
        return None

    def give_up(self, lineage: str) -> None:
        """The restart could not start: the lineage ends here."""
        self._trackers.pop(lineage, None)

    def pending(self) -> list[str]:
        """The jobs with a restart timer set."""
        return sorted({job_id for job_id, _ in self._timers.values()})

    def cancel(self, job_id: str) -> bool:
        """Cancel every pending restart of the job; True if there was one."""
        lineages = [k for k, (job, _) in self._timers.items() if job == job_id]
        for lineage in lineages:
            _, timer = self._timers.pop(lineage)
            timer.cancel()
            self._trackers.pop(lineage, None)
        return bool(lineages)

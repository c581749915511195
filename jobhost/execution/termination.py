"""The one process-supervision core: how a job's process group is ended, and the
constants every supervisor of a job process shares (the runner's local executor, the
Celery worker, init hooks and ad-hoc commands).

Termination rules: the first reason given (stop, timeout) is the one reported; SIGTERM
goes to the group once, at the first request with a grace; SIGKILL of the group comes
at the earliest deadline asked for (a second stop with a shorter grace brings it
forward, a longer one never delays it); a grace of 0 is SIGKILL at once.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Callable

DRAIN_CHUNKS = 64  # after exit, read at most this many chunks still buffered in a pipe
MAX_RESULT_BYTES = 1024 * 1024  # a larger result is refused; one byte more says so


class Termination:
    """The ending of one process group; ``signal_group(signum)`` signals it."""

    __slots__ = ("_signal", "kill_at", "stopped", "terminating", "timed_out", "timer")

    def __init__(self, signal_group: Callable[[int], object]) -> None:
        self._signal = signal_group
        self.terminating = False
        self.stopped = False
        self.timed_out = False
        self.kill_at = math.inf
        self.timer: asyncio.TimerHandle | None = None

    def request(self, grace: float, *, stopped: bool = False, timed_out: bool = False) -> None:
        """SIGTERM now (first request only), SIGKILL after ``grace`` (earliest wins)."""
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + max(0.0, grace)
        if not self.terminating:
            self.terminating = True
            self.stopped, self.timed_out = stopped, timed_out  # the first reason is the one
            if grace > 0:
                self._signal(signal.SIGTERM)
        if kill_at >= self.kill_at:
            return  # idempotent: an earlier SIGKILL is already due
        self.kill_at = kill_at
        self.cancel()
        if grace > 0:
            self.timer = loop.call_at(kill_at, self._signal, signal.SIGKILL)
        else:
            self._signal(signal.SIGKILL)

    def cancel(self) -> None:
        """Forget a pending SIGKILL (the process is gone)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

"""The termination rules every supervisor of a job process shares (no processes here)."""

from __future__ import annotations

import asyncio
import signal

from jobhost.execution.termination import Termination


class Signals:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.killed = asyncio.Event()

    def __call__(self, signum: int) -> None:
        self.sent.append(signum)
        if signum == signal.SIGKILL:
            self.killed.set()


async def test_the_first_reason_is_the_one_reported() -> None:
    signals = Signals()
    termination = Termination(signals)
    termination.request(60, timed_out=True)
    termination.request(60, stopped=True)
    assert (termination.timed_out, termination.stopped) == (True, False)
    assert signals.sent == [signal.SIGTERM]  # SIGTERM once
    termination.cancel()


async def test_a_shorter_grace_brings_the_sigkill_forward() -> None:
    signals = Signals()
    termination = Termination(signals)
    termination.request(600, stopped=True)
    termination.request(0.01, stopped=True)
    await asyncio.wait_for(signals.killed.wait(), 30)
    assert signals.sent == [signal.SIGTERM, signal.SIGKILL]


async def test_a_longer_grace_never_delays_the_sigkill() -> None:
    signals = Signals()
    termination = Termination(signals)
    termination.request(0.01, stopped=True)
    termination.request(600, stopped=True)
    await asyncio.wait_for(signals.killed.wait(), 30)
    assert signals.sent == [signal.SIGTERM, signal.SIGKILL]


async def test_a_grace_of_zero_is_sigkill_at_once() -> None:
    signals = Signals()
    Termination(signals).request(0, stopped=True)
    assert signals.sent == [signal.SIGKILL]

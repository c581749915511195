"""An in-memory executor: runs nothing, reports what the test tells it to.

For the supervisor's state machine in milliseconds: ``start`` reports ``on_started`` at
once; a test ends a run with ``exit`` (or lets ``stop`` end it as stopped).
"""

from __future__ import annotations

import asyncio

from jobhost.abc import ExecutionEvents
from jobhost.models import Execution, ExitInfo, LaunchSpec


class FakeExecutor:
    def __init__(self, events: ExecutionEvents) -> None:
        self._events = events
        self.specs: dict[str, LaunchSpec] = {}
        self.running: set[str] = set()
        self.adoptable: set[str] = set()
        self.started = asyncio.Queue[str]()
        self._pid = 1000

    async def start(self, spec: LaunchSpec) -> None:
        self._pid += 1
        self.specs[spec.execution_id] = spec
        self.running.add(spec.execution_id)
        asyncio.get_running_loop().call_soon(
            self._events.on_started, spec.execution_id, self._pid, "fake"
        )
        self.started.put_nowait(spec.execution_id)

    def exit(self, execution_id: str, code: int) -> None:
        self.end(execution_id, ExitInfo(exit_code=code, exit_signal=None))

    def end(self, execution_id: str, info: ExitInfo) -> None:
        """Report the run's end as ``info`` says (a timeout, a signal, a lost worker...)."""
        self.running.discard(execution_id)
        self._events.on_exited(execution_id, info)

    async def stop(self, execution_id: str, grace_seconds: float) -> None:
        if execution_id in self.running:
            self.running.discard(execution_id)
            info = ExitInfo(exit_code=None, exit_signal=15, stopped=True)
            asyncio.get_running_loop().call_soon(self._events.on_exited, execution_id, info)

    async def adopt(self, execution: Execution) -> bool:
        if execution.id not in self.adoptable:
            return False
        self.running.add(execution.id)
        return True

    def adopted_secrets(self, execution_id: str) -> tuple[str, ...]:
        return ()

    def exit_recorded(self, execution_id: str) -> None:
        pass

    async def terminate_orphan(self, execution: Execution) -> bool:
        return False

    async def aclose(self) -> None:
        self.running.clear()

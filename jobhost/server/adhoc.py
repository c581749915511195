"""Ad-hoc commands from the seed's ``jobs/submit``: each one a separate, audited process.

The seed ran submitted code inside the server ("MainLoop") or in a runspace; here a
command is split with ``shlex`` and executed directly (never through a shell, never
in the server's process), in its own process group, with its output kept in memory up
to a cap. Only the last ``keep`` runs are remembered; this is a compatibility path,
not a second job system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobhost.errors import BadRequest
from jobhost.models import iso, new_id, utcnow

MAX_OUTPUT = 1024 * 1024
TRUNCATED = b"\n[output truncated]\n"


@dataclass
class AdhocRun:
    id: str
    name: str
    argv: list[str]
    user: str
    description: str
    execution_mode: str
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None
    exit_code: int | None = None
    pid: int | None = None
    output: bytearray = field(default_factory=bytearray)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> str:
        if self.ended_at is None:
            return "Running"
        return "Completed" if self.exit_code == 0 else "Failed"

    @property
    def runtime_seconds(self) -> float:
        end = self.ended_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    def to_result(self) -> dict[str, Any]:
        return {
            "jobId": self.id,
            "jobName": self.name,
            "description": self.description,
            "executionMode": self.execution_mode,
            "command": self.argv,
            "userId": self.user,
            "state": self.state,
            "success": self.exit_code == 0 if self.ended_at else None,
            "exitCode": self.exit_code,
            "startTime": iso(self.started_at),
            "endTime": iso(self.ended_at),
            "runtime": self.runtime_seconds,
        }


class AdhocRunner:
    """Runs ad-hoc commands as child processes; one per app."""

    def __init__(self, cwd: str, keep: int = 200) -> None:
        self.cwd = cwd
        self.keep = keep
        self.runs: OrderedDict[str, AdhocRun] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    async def submit(
        self, name: str, argv: list[str], user: str, description: str, mode: str
    ) -> AdhocRun:
        run = AdhocRun(
            id=new_id(),
            name=name,
            argv=argv,
            user=user,
            description=description,
            execution_mode=mode,
        )
        os.makedirs(self.cwd, exist_ok=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
                cwd=self.cwd,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise BadRequest(f"Cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        run.pid = proc.pid
        self._procs[run.id] = proc
        self.runs[run.id] = run
        while len(self.runs) > self.keep:
            oldest = next(iter(self.runs))
            if self.runs[oldest].ended_at is None:
                break
            self.runs.popitem(last=False)
        task = asyncio.create_task(self._collect(run, proc), name=f"adhoc-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _collect(self, run: AdhocRun, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while chunk := await proc.stdout.read(65536):
                room = MAX_OUTPUT - len(run.output)
                if room > 0:
                    run.output += chunk[:room]
                    if len(chunk) > room:
                        run.output += TRUNCATED
            run.exit_code = await proc.wait()
        finally:
            run.ended_at = utcnow()
            self._procs.pop(run.id, None)
            run.done.set()

    def visible(self, username: str, superuser: bool) -> list[AdhocRun]:
        return [r for r in reversed(self.runs.values()) if superuser or r.user == username]

    async def aclose(self) -> None:
        """Kill what is still running (process group), then wait for the collectors."""
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

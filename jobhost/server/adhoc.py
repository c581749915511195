"""Ad-hoc commands from the seed's ``jobs/submit``: each one a separate, audited process.

The seed ran submitted code inside the server ("MainLoop") or in a runspace; here a
command is split with ``shlex`` and executed directly (never through a shell, never
in the server's process), in its own process group, with its output kept in memory up
to a cap. Only the last ``keep`` runs are remembered; this is a compatibility path,
not a second job system.

Each command is a ``ChildProcess`` watched by the loop like a job (its output pipe and
a pidfd, no thread): it ends when the command exits, whatever it left holding its
output open (the rest of its group is killed then), and it sees only the host's
allow-listed environment (``base_env``), never the server's secrets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobhost.errors import BadRequest
from jobhost.execution.launch import base_env
from jobhost.execution.output import CHUNK
from jobhost.execution.process import MAX_CONTROL_LINE, ChildProcess
from jobhost.execution.termination import DRAIN_CHUNKS
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
        self._procs: dict[str, ChildProcess] = {}

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
            process = ChildProcess.spawn(argv, self.cwd, base_env())
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise BadRequest(f"Cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        run.pid = process.pid
        self._procs[run.id] = process
        self.runs[run.id] = run
        while len(self.runs) > self.keep:
            oldest = next(iter(self.runs))
            if self.runs[oldest].ended_at is None:
                break
            self.runs.popitem(last=False)
        loop = asyncio.get_running_loop()
        loop.add_reader(process.output_fd, self._read, run, process)
        loop.add_reader(process.control_fd, self._discard, process)
        loop.add_reader(process.pidfd, self._exited, run, process)
        return run

    def _read(self, run: AdhocRun, process: ChildProcess) -> bool:
        """Read one chunk into the capped buffer; False at the end (or nothing there)."""
        try:
            chunk = os.read(process.output_fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(process.output_fd)
            return False
        room = MAX_OUTPUT - len(run.output)
        if room > 0:
            run.output += chunk[:room]
            if len(chunk) > room:
                run.output += TRUNCATED
        return True

    def _discard(self, process: ChildProcess) -> None:
        """Progress lines mean nothing here; read so that a writer never blocks."""
        try:
            if not os.read(process.control_fd, MAX_CONTROL_LINE):
                asyncio.get_running_loop().remove_reader(process.control_fd)
        except BlockingIOError:
            pass
        except OSError:
            asyncio.get_running_loop().remove_reader(process.control_fd)

    def _exited(self, run: AdhocRun, process: ChildProcess) -> None:
        exit = process.reap()  # also kills what the command left in its group
        if exit is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(DRAIN_CHUNKS):
            if not self._read(run, process):
                break
        for fd in (process.output_fd, process.control_fd, process.pidfd):
            loop.remove_reader(fd)
        process.close()
        if exit.exit_code is not None:
            run.exit_code = exit.exit_code
        elif exit.exit_signal is not None:
            run.exit_code = -exit.exit_signal
        run.ended_at = utcnow()
        self._procs.pop(run.id, None)
        run.done.set()

    def visible(self, username: str, superuser: bool) -> list[AdhocRun]:
        return [r for r in reversed(self.runs.values()) if superuser or r.user == username]

    async def aclose(self) -> None:
        """Kill what is still running (process group), then wait until it is reaped."""
        waits = []
        for run_id, process in list(self._procs.items()):
            process.signal(signal.SIGKILL)
            waits.append(self.runs[run_id].done.wait())
        if waits:
            await asyncio.gather(*waits)

"""The default executor: job processes on this machine, driven by the one event loop.

No thread per job and no polling: every running job registers three descriptors with the
loop (its output pipe, its progress pipe and a pidfd that becomes readable when it
exits), and two timers at most (the timeout and the SIGKILL after a stop's grace).

Exit is decided by the process, never by the end of its output: grandchildren may hold
the pipe open. When the leader exits, whatever is left in its process group is killed,
the leader is reaped with ``wait4`` (exit status and rusage), what is still buffered in
the pipes is drained, and ``on_exited`` reports it.

Spawning goes through a small fixed pool of threads (``SPAWN_THREADS``): ``fork_exec``
releases the GIL, so two cores start processes in parallel and the loop keeps serving
while a spawn is in progress. The pool is bounded and busy only during the spawn itself;
no thread ever waits on a running job.

Log writes are synchronous ``os.write`` calls of at most one read chunk (64 KiB) into
the page cache: cheaper than a hop to a thread, and bounded per loop iteration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shlex
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from jobhost.abc import ExecutionEvents
from jobhost.errors import Conflict
from jobhost.execution.output import CHUNK, OutputLog
from jobhost.execution.process import ChildProcess, kill_orphan_group, raise_fd_limit
from jobhost.models import Execution, ExitInfo, LaunchSpec

log = logging.getLogger(__name__)

MAX_CONTROL_LINE = 4096  # a progress line longer than this is dropped whole
MAX_PROGRESS_MESSAGE = 1000
DRAIN_CHUNKS = 64  # after exit, read at most this many chunks still buffered
SPAWN_THREADS = 2
_NO_STOP = -1.0  # in ``_spawning``: no stop was asked for while the process was starting


@dataclass(eq=False, slots=True)
class _Run:
    spec: LaunchSpec
    process: ChildProcess
    output: OutputLog
    control: bytearray = field(default_factory=bytearray)
    skipping_line: bool = False  # inside an over-long control line
    terminating: bool = False
    stopped: bool = False
    timed_out: bool = False
    kill_at: float = math.inf
    kill_timer: asyncio.TimerHandle | None = None
    timeout_timer: asyncio.TimerHandle | None = None
    write_failed: bool = False


def _progress_from(line: bytes) -> tuple[float | None, str | None] | None:
    """``(fraction, message)`` from one control line, or None for anything malformed."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not ({"progress", "message"} & message.keys()):
        return None
    raw = message.get("progress")
    text = message.get("message")
    fraction: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and not math.isnan(raw):
        fraction = min(1.0, max(0.0, float(raw)))
    if text is not None:
        text = str(text)[:MAX_PROGRESS_MESSAGE]
    return fraction, text


class LocalExecutor:
    """Runs each execution as a local process in its own session (see the module docstring)."""

    def __init__(self, events: ExecutionEvents, *, host: str | None = None) -> None:
        self._events = events
        self._host = host or socket.gethostname()
        self._runs: dict[str, _Run] = {}
        # Executions being spawned right now → the grace of a stop asked for meanwhile.
        self._spawning: dict[str, float] = {}
        self._spawner = ThreadPoolExecutor(SPAWN_THREADS, thread_name_prefix="jobhost-spawn")
        self._devnull = -1  # shared stdin of every child, opened on first use
        raise_fd_limit()

    @property
    def host(self) -> str:
        return self._host

    def running_ids(self) -> list[str]:
        """Executions whose process has not been reaped yet."""
        return list(self._runs)

    async def start(self, spec: LaunchSpec) -> None:
        """Spawn ``spec``; ``on_started`` (or ``on_exited`` with an error) follows."""
        loop = asyncio.get_running_loop()
        execution_id = spec.execution_id
        if execution_id in self._runs or execution_id in self._spawning:
            raise Conflict(f"Execution {execution_id!r} is already running on {self._host}")
        try:
            output = OutputLog(spec.log_path, spec.max_output_bytes)
        except OSError as exc:
            self._fail(loop, execution_id, f"Cannot open the output log {spec.log_path}: {exc}")
            return
        try:
            if not spec.argv:
                raise ValueError("the command is empty")
            if self._devnull < 0:
                self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._spawning[execution_id] = _NO_STOP
            process = await loop.run_in_executor(
                self._spawner,
                lambda: ChildProcess.spawn(spec.argv, spec.cwd, spec.env, stdin=self._devnull),
            )
        except (OSError, ValueError) as exc:
            self._spawning.pop(execution_id, None)
            output.close()
            command = shlex.join(spec.argv) or "job"
            self._fail(loop, execution_id, f"Cannot start {command}: {exc}")
            return
        run = _Run(spec=spec, process=process, output=output)
        self._runs[execution_id] = run
        loop.add_reader(process.output_fd, self._read_output, run)
        loop.add_reader(process.control_fd, self._read_control, run)
        loop.add_reader(process.pidfd, self._exited, run)
        if spec.timeout_seconds is not None and spec.timeout_seconds > 0:
            run.timeout_timer = loop.call_later(spec.timeout_seconds, self._timed_out, run)
        # Scheduled rather than called: it lands before any output or exit callback.
        loop.call_soon(self._events.on_started, execution_id, process.pid, self._host)
        stop_grace = self._spawning.pop(execution_id, _NO_STOP)
        if stop_grace != _NO_STOP:  # stop() came while the process was being spawned
            self._terminate(run, stop_grace, stopped=True)

    async def stop(self, execution_id: str, grace_seconds: float) -> None:
        """SIGTERM the group now, SIGKILL after ``grace_seconds``; no-op when gone."""
        if execution_id in self._spawning:
            self._spawning[execution_id] = max(0.0, grace_seconds)
            return
        run = self._runs.get(execution_id)
        if run is not None:
            self._terminate(run, grace_seconds, stopped=True)

    async def terminate_orphan(self, execution: Execution) -> bool:
        """Kill the group a crashed host left behind, verified by pid and create time."""
        if execution.pid is None or execution.started_at is None:
            return False
        return kill_orphan_group(execution.pid, execution.started_at)

    async def aclose(self) -> None:
        """Forget every run without signalling it; its output stops being captured."""
        loop = asyncio.get_running_loop()
        for run in list(self._runs.values()):
            self._release(loop, run)
            run.process.detach()
        self._runs.clear()
        self._spawner.shutdown(wait=True)  # a spawn in flight takes a millisecond
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1

    # -- loop callbacks ---------------------------------------------------------------

    def _fail(self, loop: asyncio.AbstractEventLoop, execution_id: str, error: str) -> None:
        info = ExitInfo(exit_code=None, exit_signal=None, error=error)
        loop.call_soon(self._events.on_exited, execution_id, info)

    def _timed_out(self, run: _Run) -> None:
        run.timeout_timer = None
        self._terminate(run, run.spec.stop_grace_seconds, timed_out=True)

    def _terminate(
        self, run: _Run, grace: float, *, stopped: bool = False, timed_out: bool = False
    ) -> None:
        if run.process.exit is not None:
            return
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + max(0.0, grace)
        if not run.terminating:
            run.terminating = True
            run.stopped, run.timed_out = stopped, timed_out  # the first reason is the one
            if grace > 0:
                run.process.signal(signal.SIGTERM)
        if kill_at >= run.kill_at:
            return  # idempotent: an earlier SIGKILL is already due
        run.kill_at = kill_at
        if run.kill_timer is not None:
            run.kill_timer.cancel()
        if grace > 0:
            run.kill_timer = loop.call_at(kill_at, run.process.signal, signal.SIGKILL)
        else:
            run.kill_timer = None
            run.process.signal(signal.SIGKILL)

    def _read_output(self, run: _Run) -> bool | None:
        """Read one chunk (so a flooding job cannot starve the loop).

        True when data was read, None when none is there yet, False at the end.
        """
        try:
            data = os.read(run.process.output_fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(run.process.output_fd)
            return False
        self._append(run, data)
        self._events.on_output(run.spec.execution_id, run.output.total_bytes)
        return True

    def _append(self, run: _Run, data: bytes) -> None:
        try:
            run.output.write(data)
        except OSError as exc:
            # Keep reading regardless: a job blocked on a full pipe would never finish.
            run.output.total_bytes += len(data)
            if not run.write_failed:
                run.write_failed = True
                log.warning("Output of %s is being lost: %s", run.spec.execution_id, exc)

    def _read_control(self, run: _Run) -> bool | None:
        """Read and act on progress lines; returns like ``_read_output``."""
        try:
            data = os.read(run.process.control_fd, MAX_CONTROL_LINE)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(run.process.control_fd)
            return False
        buffer = run.control
        buffer += data
        while (newline := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if run.skipping_line:
                run.skipping_line = False
                continue
            progress = _progress_from(line)
            if progress is not None:
                self._events.on_progress(run.spec.execution_id, *progress)
        if len(buffer) > MAX_CONTROL_LINE:
            buffer.clear()
            run.skipping_line = True
        return True

    def _exited(self, run: _Run) -> None:
        exit = run.process.reap()
        if exit is None:
            return  # woken early: the pidfd stays registered
        loop = asyncio.get_running_loop()
        loop.remove_reader(run.process.pidfd)
        for _ in range(DRAIN_CHUNKS):
            if not self._read_output(run):
                break
        for _ in range(DRAIN_CHUNKS):
            if not self._read_control(run):
                break
        self._release(loop, run)
        self._runs.pop(run.spec.execution_id, None)
        self._events.on_exited(
            run.spec.execution_id,
            ExitInfo(
                exit_code=exit.exit_code,
                exit_signal=exit.exit_signal,
                cpu_seconds=exit.cpu_seconds,
                peak_rss_bytes=exit.peak_rss_bytes,
                output_bytes=run.output.total_bytes,
                timed_out=run.timed_out,
                stopped=run.stopped,
            ),
        )

    def _release(self, loop: asyncio.AbstractEventLoop, run: _Run) -> None:
        """Unregister and close everything the run holds, and finish its log."""
        for timer in (run.kill_timer, run.timeout_timer):
            if timer is not None:
                timer.cancel()
        run.kill_timer = run.timeout_timer = None
        for fd in (run.process.output_fd, run.process.control_fd, run.process.pidfd):
            if fd >= 0:
                loop.remove_reader(fd)
        run.process.close()
        try:
            run.output.close()
        except OSError as exc:
            log.warning("Cannot finish the output log of %s: %s", run.spec.execution_id, exc)

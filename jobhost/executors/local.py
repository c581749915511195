"""The default executor: job processes on this machine, driven by the one event loop.

No thread per job and no polling: every running job registers three descriptors with the
loop (its output pipe, its progress pipe and a pidfd that becomes readable when it
exits), and two timers at most (the timeout and the SIGKILL after a stop's grace).

Exit is decided by the process, never by the end of its output: grandchildren may hold
the pipe open. When the leader exits, whatever is left in its process group is killed,
the leader is reaped with ``wait4`` (exit status and rusage), what is still buffered in
the pipes is drained, and ``on_exited`` reports it.

Spawning goes through a small fixed set of threads (``SPAWN_THREADS``): ``fork_exec``
releases the GIL, so two cores start processes in parallel and the loop keeps serving
while a spawn is in progress. The threads are busy only during the spawn and, when no start
is waiting, making the next run's log file ahead of it; no thread ever waits on a running
job. Measured on two cores, a burst of
trivial jobs runs about half again as fast with two threads as with one, and spawning on
the loop itself is slower still.

Log writes are synchronous ``os.write`` calls of at most one read chunk (64 KiB) into
the page cache: cheaper than a hop to a thread, and bounded per loop iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import shlex
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from jobhost.abc import ExecutionEvents
from jobhost.errors import Conflict
from jobhost.execution.cgroups import Isolation
from jobhost.execution.confinement import Confinement
from jobhost.execution.output import CHUNK, OutputLog, SpareLogs
from jobhost.execution.process import (
    MAX_CONTROL_LINE,
    ChildProcess,
    ProgressLines,
    kill_orphan_by_marker,
    kill_orphan_group,
    raise_fd_limit,
)
from jobhost.execution.termination import DRAIN_CHUNKS, Termination
from jobhost.models import Execution, ExitInfo, LaunchSpec

log = logging.getLogger(__name__)

SPAWN_THREADS = 2
_NO_STOP = -1.0  # in ``_spawning``: no stop was asked for while the process was starting


@dataclass(eq=False, slots=True)
class _Run:
    spec: LaunchSpec
    process: ChildProcess
    output: OutputLog
    progress: ProgressLines = field(default_factory=ProgressLines)
    termination: Termination = field(init=False)
    timeout_timer: asyncio.TimerHandle | None = None
    write_failed: bool = False
    watching: set[int] = field(default_factory=set)  # descriptors registered with the loop

    def __post_init__(self) -> None:
        self.termination = Termination(self.process.signal)


_Launched = tuple[OutputLog, ChildProcess] | str
_Launch = Callable[[LaunchSpec], _Launched]
_Done = Callable[[LaunchSpec, "_Launched | BaseException"], None]
_Request = tuple[asyncio.AbstractEventLoop, _Launch, LaunchSpec, _Done]


class _SpawnThreads:
    """A fixed set of threads that run launches; the answers come back in loop callbacks.

    Leaner than ``run_in_executor`` (one queue put, no future): dispatch does this once per
    start. Answers that arrive while the loop has not taken the previous ones yet join
    them: a burst's spawns wake the loop once per batch, not once each.
    """

    def __init__(self, count: int, idle: Callable[[], None]) -> None:
        """``idle()`` runs on a thread that has answered and finds no request waiting."""
        self._count = count
        self._idle = idle
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._answers: list[tuple[_Done, LaunchSpec, _Launched | BaseException]] = []
        self._answers_lock = threading.Lock()

    def run(
        self, loop: asyncio.AbstractEventLoop, fn: _Launch, spec: LaunchSpec, done: _Done
    ) -> None:
        """``fn(spec)`` on a spawner thread, then ``done(spec, result)`` on ``loop``."""
        if not self._threads:
            for index in range(self._count):
                thread = threading.Thread(
                    target=self._serve, name=f"jobhost-spawn-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        self._requests.put((loop, fn, spec, done))

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            loop, fn, spec, done = request
            try:
                result: _Launched | BaseException = fn(spec)
            except BaseException as exc:  # handed to the loop's callback
                result = exc
            with self._answers_lock:
                first = not self._answers
                self._answers.append((done, spec, result))
            if first:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._answer)
            if self._requests.empty():
                try:
                    self._idle()
                except Exception:  # only work done ahead of time: the spawns go on without
                    log.exception("Preparing the next spawn failed")

    def _answer(self) -> None:
        """On the loop: every answer that has arrived, in order."""
        with self._answers_lock:
            answers, self._answers = self._answers, []
        for done, spec, result in answers:
            try:
                done(spec, result)
            except Exception:  # the others are still due
                log.exception("Handling the spawn of %s failed", spec.execution_id)

    def close(self) -> None:
        for _ in self._threads:
            self._requests.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():  # the start was cancelled meanwhile
        done.set_result(None)


def _unwatch(run: _Run, fd: int) -> None:
    # Only what is still registered: removing an unknown descriptor costs a failed lookup.
    if fd in run.watching:
        run.watching.discard(fd)
        asyncio.get_running_loop().remove_reader(fd)


class LocalExecutor:
    """Runs each execution as a local process in its own session (see the module docstring)."""

    # The spawn is reported within a few milliseconds: the journal may fold a run's first
    # record into its ``running`` one (``Journal.record(fold=True)``).
    fold_start = True

    def __init__(
        self,
        events: ExecutionEvents,
        *,
        host: str | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        """``isolation``: how runs are confined (detected here when not given)."""
        self._events = events
        self._host = host or socket.gethostname()
        self.isolation = Isolation.detect() if isolation is None else isolation
        log.info("Run isolation: %s", self.isolation.describe())
        self._runs: dict[str, _Run] = {}
        # Executions being spawned right now → the grace of a stop asked for meanwhile.
        self._spawning: dict[str, float] = {}
        self._spare_logs = SpareLogs()
        self._spawner = _SpawnThreads(SPAWN_THREADS, self._prepare)
        self._then: dict[str, Callable[[], object]] = {}  # after a spawn (``launch``)
        self._devnull = -1  # shared stdin of every child, opened on first use
        raise_fd_limit()

    @property
    def host(self) -> str:
        return self._host

    def isolation_description(self) -> str:
        """How runs are confined (cgroup v2, v1 or rlimits)."""
        return self.isolation.describe()

    def running_ids(self) -> list[str]:
        """Executions whose process has not been reaped yet."""
        return list(self._runs)

    def describe(self, execution_id: str) -> tuple[int, int] | None:
        """``(pid, output bytes so far)`` of a running execution, None when not running."""
        run = self._runs.get(execution_id)
        return None if run is None else (run.process.pid, run.output.total_bytes)

    async def start(self, spec: LaunchSpec) -> None:
        """Spawn ``spec``; ``on_started`` (or ``on_exited`` with an error) follows.

        Returns once the process is spawned and watched (``launch`` does not wait)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.launch(spec, functools.partial(_settle, done))
        await done

    def launch(self, spec: LaunchSpec, then: Callable[[], object] | None = None) -> None:
        """Start spawning ``spec`` and return at once; ``on_started`` (or ``on_exited`` with
        an error) follows, then ``then()``. Raises ``Conflict`` for an ID already here."""
        loop = asyncio.get_running_loop()
        execution_id = spec.execution_id
        if execution_id in self._runs or execution_id in self._spawning:
            raise Conflict(f"Execution {execution_id!r} is already running on {self._host}")
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._spawning[execution_id] = _NO_STOP
        if then is not None:
            self._then[execution_id] = then
        self._spawner.run(loop, self._launch, spec, self._launched)

    def _launched(self, spec: LaunchSpec, launched: _Launched | BaseException) -> None:
        """On the loop, after the spawn: announce, watch, or report the failure."""
        loop = asyncio.get_running_loop()
        execution_id = spec.execution_id
        then = self._then.pop(execution_id, None)
        try:
            self._watch(loop, spec, launched)
        finally:
            if then is not None:
                then()

    def _watch(
        self, loop: asyncio.AbstractEventLoop, spec: LaunchSpec, launched: _Launched | BaseException
    ) -> None:
        execution_id = spec.execution_id
        if isinstance(launched, BaseException):  # a bug in the launch: fail the run, loudly
            log.error("Launching %s failed", execution_id, exc_info=launched)
            launched = f"Cannot start the job: {launched}"
        if isinstance(launched, str):
            self._spawning.pop(execution_id, None)
            self._fail(loop, execution_id, launched)
            return
        output, process = launched
        self._events.on_started(execution_id, process.pid, self._host)
        run = _Run(spec=spec, process=process, output=output)
        self._runs[execution_id] = run
        loop.add_reader(process.output_fd, self._read_output, run)
        loop.add_reader(process.error_fd, self._read_stderr, run)  # stderr kept apart
        loop.add_reader(process.control_fd, self._read_control, run)
        loop.add_reader(process.pidfd, self._exited, run)
        run.watching.update(
            (process.output_fd, process.error_fd, process.control_fd, process.pidfd)
        )
        if spec.timeout_seconds is not None and spec.timeout_seconds > 0:
            run.timeout_timer = loop.call_later(spec.timeout_seconds, self._timed_out, run)
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
        """Kill the group a crashed host left behind: verified by pid and create time, or,
        when the pid never reached the store, found by the execution ID in its environment."""
        if execution.pid is None or execution.started_at is None:
            return kill_orphan_by_marker(execution.id)
        return kill_orphan_group(execution.pid, execution.started_at)

    async def adopt(self, execution: Execution) -> bool:
        """Re-attach to a run an earlier server started; not possible yet: always False."""
        return False

    def adopted_secrets(self, execution_id: str) -> tuple[str, ...]:
        return ()  # nothing is ever adopted here

    def exit_recorded(self, execution_id: str) -> None:
        pass  # no exit is kept for anyone else

    async def aclose(self) -> None:
        """Forget every run without signalling it; its output stops being captured."""
        loop = asyncio.get_running_loop()
        for run in list(self._runs.values()):
            self._release(loop, run)
            run.process.detach()
        self._runs.clear()
        self._spawner.close()  # waits for a spawn in flight: it takes a millisecond
        self._spare_logs.close()
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1

    def _launch(self, spec: LaunchSpec) -> tuple[OutputLog, ChildProcess] | str:
        """Open the run's log and spawn the process (on a spawner thread); the message to
        report when a step fails.

        The log comes first although creating a file is the slowest step of a launch
        (0.2-0.4 ms on a busy ext4): a job whose output cannot be kept never starts, rather
        than doing part of its work before being killed.
        """
        try:
            spare = self._spare_logs.take(spec.log_path)
            # redact: the log masks the run's secret values as it writes
            output = OutputLog(spec.log_path, spec.max_output_bytes, spec.secrets, fd=spare)
        except OSError as exc:
            return f"Cannot open the output log {spec.log_path}: {exc}"
        try:
            if not spec.argv:
                raise ValueError("the command is empty")
            # The isolation hook (jobhost.execution.confinement): cgroup, rlimits, run_as.
            confinement = Confinement.prepare(self.isolation, spec)
            process = ChildProcess.spawn(
                spec.argv,
                spec.cwd,
                spec.env,
                stdin=self._devnull,
                confinement=confinement,
                split_stderr=True,
            )
        except (OSError, ValueError) as exc:
            output.close()
            # The program only: arguments and environment may hold secret values.
            return f"Cannot start {shlex.quote(spec.argv[0]) if spec.argv else 'job'}: {exc}"
        return output, process

    def _prepare(self) -> None:
        """Ahead of the next start, on a spawner thread with nothing else to do: its log
        file, so that the start itself only names it."""
        self._spare_logs.make()

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
        if run.process.exit is None:
            run.termination.request(grace, stopped=stopped, timed_out=timed_out)

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
            _unwatch(run, run.process.output_fd)
            return False
        self._append(run, data)
        self._events.on_output(run.spec.execution_id, run.output.total_bytes)
        return True

    def _read_stderr(self, run: _Run) -> bool | None:
        """Like ``_read_output``, for the stderr pipe: the log records the span."""
        try:
            data = os.read(run.process.error_fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            _unwatch(run, run.process.error_fd)
            return False
        self._append(run, data, stderr=True)
        self._events.on_output(run.spec.execution_id, run.output.total_bytes)
        return True

    def _append(self, run: _Run, data: bytes, *, stderr: bool = False) -> None:
        try:
            if stderr:
                run.output.write_stderr(data)
            else:
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
            _unwatch(run, run.process.control_fd)
            return False
        for fraction, message in run.progress.feed(data):
            self._events.on_progress(run.spec.execution_id, fraction, message)
        return True

    def _exited(self, run: _Run) -> None:
        exit = run.process.reap()
        if exit is None:
            return  # woken early: the pidfd stays registered
        loop = asyncio.get_running_loop()
        process = run.process
        _unwatch(run, process.pidfd)
        # What is still buffered in the pipes; one that has reached its end already (it is
        # no longer watched) has nothing more.
        watching = run.watching
        for fd, read in (
            (process.output_fd, self._read_output),
            (process.error_fd, self._read_stderr),
            (process.control_fd, self._read_control),
        ):
            if fd in watching:
                for _ in range(DRAIN_CHUNKS):
                    if not read(run):
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
                error=exit.error,
                timed_out=run.termination.timed_out,
                stopped=run.termination.stopped,
            ),
        )

    def _release(self, loop: asyncio.AbstractEventLoop, run: _Run) -> None:
        """Unregister and close everything the run holds, and finish its log."""
        run.termination.cancel()
        if run.timeout_timer is not None:
            run.timeout_timer.cancel()
            run.timeout_timer = None
        for fd in run.watching:
            loop.remove_reader(fd)
        run.watching.clear()
        run.process.close()
        try:
            run.output.close()
        except OSError as exc:
            log.warning("Cannot finish the output log of %s: %s", run.spec.execution_id, exc)

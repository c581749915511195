"""The default executor: job processes on this machine, owned by the data dir's runner.

The processes are children of the runner (``jobhost.runner``), a small process per data
dir that outlives the server; this class is the server's side of its socket. ``start``
and ``stop`` are one message each (no reply awaited: ``on_started`` or ``on_exited``
follows as an event); events are passed on to ``ExecutionEvents`` in the loop callback
that reads them (``_EventStream``).

When the server stops or dies, runs go on in the runner. The next server on the machine
``adopt``s them: from then on it hears their output totals (continuing from the log's
size: the runner never stopped writing it), progress, and exit (kept by the runner while
nobody listened). Runs the runner holds that no server owns are listed by ``unclaimed``,
so that reconciliation can end those its store does not know (``terminate_orphan``).

The runner is started on the first ``start`` when none is listening; ``adopt``,
``terminate_orphan`` and ``unclaimed`` never start one (no runner, nothing to adopt).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobhost.abc import ExecutionEvents
from jobhost.errors import Conflict
from jobhost.execution.cgroups import ISOLATION_ENV, ISOLATION_NAME
from jobhost.execution.launch import base_env
from jobhost.execution.process import kill_orphan_by_marker, kill_orphan_group
from jobhost.models import Execution, ExitInfo, LaunchSpec
from jobhost.runner.protocol import (
    LOG_NAME,
    MAX_LINE,
    READY,
    SOCKET_NAME,
    LineBuffer,
    Message,
    Outbox,
    decode,
    exit_from_wire,
    runner_dir,
    runner_protocol,
    short_path,
    spec_to_wire,
)

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3


class RunnerUnavailable(OSError):
    """The runner could not be reached or started."""


class RunnerExecutor:
    """Runs each execution as a child of the data dir's runner (see the module docstring)."""

    # The spawn is reported within a few milliseconds: the journal may fold a run's first
    # record into its ``running`` one (``Journal.record(fold=True)``).
    fold_start = True

    def __init__(
        self,
        events: ExecutionEvents,
        data_dir: str | os.PathLike[str],
        *,
        host: str | None = None,
        isolation: str = "auto",
    ) -> None:
        self._events = events
        self._isolation = isolation  # for a runner this starts: "auto", "cgroup", "rlimits"
        self._host = host or socket.gethostname()
        self._dir = runner_dir(data_dir)
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: Outbox | None = None  # the writer's, batched per loop iteration
        self._protocol = 1  # the runner's (``runner_protocol``), read at connect
        self._connecting = asyncio.Lock()
        self._runs: set[str] = set()  # started or adopted here, end not heard yet
        self._held: dict[str, list[Message]] = {}  # events of an adoption in progress
        self._secrets: dict[str, tuple[str, ...]] = {}  # of adopted runs, until asked once
        self._requests: dict[int, asyncio.Future[Message]] = {}
        self._next_request = 0
        self._closed = False

    @property
    def host(self) -> str:
        return self._host

    def isolation_description(self) -> str:
        """How the runner confines runs (cgroup v2, v1 or rlimits), as it said at start."""
        try:
            return (self._dir / ISOLATION_NAME).read_text().strip()
        except OSError:
            return "not known yet: the runner starts with the first run"

    @property
    def runner_dir(self) -> Path:
        """Where the runner's socket, lock and log (``runner.log``) are."""
        return self._dir

    def running_ids(self) -> list[str]:
        """Executions started or adopted here whose end has not been reported yet."""
        return list(self._runs)

    # -- the Executor contract ---------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> None:
        """Hand ``spec`` to the runner; ``on_started`` (or ``on_exited`` with an error) follows."""
        execution_id = spec.execution_id
        if execution_id in self._runs:
            raise Conflict(f"Execution {execution_id!r} is already running on {self._host}")
        outbox = self._outbox
        if outbox is None:
            try:
                await self._connect(spawn=True)
            except RunnerUnavailable as exc:
                info = ExitInfo(exit_code=None, exit_signal=None, error=str(exc))
                asyncio.get_running_loop().call_soon(self._events.on_exited, execution_id, info)
                return
            outbox = self._outbox
            assert outbox is not None
        self._runs.add(execution_id)
        outbox.send({"op": "start", "spec": spec_to_wire(spec, self._protocol)})

    async def stop(self, execution_id: str, grace_seconds: float) -> None:
        """SIGTERM the group now, SIGKILL after ``grace_seconds`` (in the runner); no-op
        when the run is not running here."""
        if execution_id in self._runs and self._outbox is not None:
            self._outbox.send({"op": "stop", "i": execution_id, "grace": max(0.0, grace_seconds)})

    async def adopt(self, execution: Execution) -> bool:
        """Become the owner of a run the runner holds (running, or ended with its exit
        record kept); its events follow from the next loop iteration on."""
        execution_id = execution.id
        if execution_id in self._runs:
            return True
        reply = await self._request({"op": "adopt", "i": execution_id}, hold=execution_id)
        if reply is None or not reply.get("ok"):
            self._held.pop(execution_id, None)
            return False
        self._runs.add(execution_id)
        self._secrets[execution_id] = tuple(str(s) for s in reply.get("s") or ())
        asyncio.get_running_loop().call_soon(self._release, execution_id)
        return True

    def exit_recorded(self, execution_id: str) -> None:
        """Acknowledge the exit: the runner forgets its record of the run."""
        if self._outbox is not None:
            self._outbox.send({"op": "ack", "i": execution_id})

    def adopted_secrets(self, execution_id: str) -> tuple[str, ...]:
        """The runner keeps each run's secret values (in memory, never on disk) and hands
        them to the server that adopts it."""
        return self._secrets.pop(execution_id, ())

    async def terminate_orphan(self, execution: Execution) -> bool:
        """Kill a run nobody may keep: through the runner when it holds it (no exit record
        is kept then), else the process group found by pid and start time, or by the
        execution ID in its environment (a process that the runner does not own)."""
        reply = await self._request({"op": "kill", "i": execution.id})
        if reply is not None and reply.get("ok"):
            return True
        if execution.pid is None or execution.started_at is None:
            return kill_orphan_by_marker(execution.id)
        return kill_orphan_group(execution.pid, execution.started_at)

    async def unclaimed(self) -> list[str]:
        """Executions the runner holds (running, or ended unacknowledged) that no connected
        server owns. Reconciliation adopts those its store knows, and passes the others to
        ``terminate_orphan``: no job runs without a durable record."""
        reply = await self._request({"op": "list"})
        if reply is None:
            return []
        return [run["id"] for run in reply.get("runs", []) if not run.get("owned")]

    async def aclose(self) -> None:
        """Disconnect; the runs go on in the runner, to be adopted by the next server."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            if self._outbox is not None:
                self._outbox.flush()  # an ack or a stop sent just before
            self._outbox = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._runs.clear()

    # -- the connection ----------------------------------------------------------------

    async def _request(self, message: Message, *, hold: str | None = None) -> Message | None:
        """Send a request and await its reply; None when no runner is there."""
        try:
            await self._connect(spawn=False)
        except RunnerUnavailable:
            return None
        outbox = self._outbox
        if outbox is None:
            return None
        self._next_request += 1
        number = self._next_request
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests[number] = future
        if hold is not None:
            self._held[hold] = []
        outbox.send({**message, "req": number})
        try:
            return await future
        except RunnerUnavailable:
            return None
        finally:
            self._requests.pop(number, None)

    async def _connect(self, *, spawn: bool) -> None:
        """Make the connection (and start the runner, with ``spawn``) when missing."""
        async with self._connecting:
            if self._writer is not None:
                return
            if self._closed:
                raise RunnerUnavailable("The executor is closed")
            error: OSError | None = None
            for _ in range(CONNECT_ATTEMPTS):
                try:
                    writer = await self._open()
                except OSError as exc:
                    error = exc
                    if not spawn:
                        return
                    await asyncio.to_thread(self._spawn_runner)
                    continue
                self._protocol = runner_protocol(self._dir)
                self._writer = writer
                self._outbox = Outbox(writer)
                return
            raise RunnerUnavailable(
                f"Cannot reach the runner in {self._dir} ({error}); see {self._dir / LOG_NAME}"
            )

    async def _open(self) -> asyncio.StreamWriter:
        loop = asyncio.get_running_loop()
        directory_fd = os.open(self._dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            stream = _EventStream(self._received, loop)
            transport, _ = await loop.create_unix_connection(
                lambda: stream, short_path(directory_fd, SOCKET_NAME)
            )
        finally:
            os.close(directory_fd)
        writer = asyncio.StreamWriter(transport, stream, stream.reader, loop)
        stream.on_lost = functools.partial(self._lost, writer)
        return writer

    def _spawn_runner(self) -> None:
        """Start the runner detached and wait until it listens (on a thread)."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        env = base_env()
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env[ISOLATION_ENV] = self._isolation
        try:
            with open(self._dir / LOG_NAME, "ab") as runner_log:
                launcher = subprocess.Popen(
                    [sys.executable, "-m", "jobhost.runner", str(self._dir), str(ready_w)],
                    stdin=subprocess.DEVNULL,
                    stdout=runner_log,
                    stderr=runner_log,
                    pass_fds=(ready_w,),
                    start_new_session=True,  # no terminal's Ctrl-C reaches it
                    cwd="/",
                    env=env,
                )
        finally:
            os.close(ready_w)
        try:
            launcher.wait()  # the runner forks at once: this reaps the short-lived parent
            with os.fdopen(ready_r, "rb") as ready:
                answer = ready.readline()
        except BaseException:
            raise
        if answer != READY:
            raise RunnerUnavailable(
                f"The runner for {self._dir} did not start; see {self._dir / LOG_NAME}"
            )

    def _received(self, lines: list[bytes]) -> None:
        for line in lines:
            try:
                self._dispatch(decode(line))
            except Exception:  # one bad event must not end the stream
                log.exception("Cannot handle runner event %r", line[:200])

    def _lost(self, writer: asyncio.StreamWriter, error: Exception | None) -> None:
        if error is not None:
            log.warning("Lost the connection to the runner in %s: %s", self._dir, error)
        if self._writer is writer:
            self._writer = None
            self._outbox = None
        if not self._closed:
            self._runner_gone()

    def _runner_gone(self) -> None:
        """The runner ended under us: its runs cannot be watched by anyone any more."""
        for future in self._requests.values():
            if not future.done():
                future.set_exception(RunnerUnavailable("the runner went away"))
        error = (
            f"The runner process of {self._dir.parent} ended during this run; "
            f"see {self._dir / LOG_NAME}"
        )
        for execution_id in list(self._runs):
            self._runs.discard(execution_id)
            info = ExitInfo(exit_code=None, exit_signal=None, error=error, lost=True)
            self._events.on_exited(execution_id, info)

    def _dispatch(self, message: Message) -> None:
        kind = message.get("e")
        if kind == "r":
            future = self._requests.get(int(message["req"]))
            if future is not None and not future.done():
                future.set_result(message)
            return
        execution_id = str(message.get("i"))
        held = self._held.get(execution_id)
        if held is not None:
            held.append(message)
            return
        self._deliver(execution_id, message)

    def _deliver(self, execution_id: str, message: Message) -> None:
        kind = message.get("e")
        if kind == "o":
            self._events.on_output(execution_id, int(message["t"]))
        elif kind == "s":
            # The runner is on this machine: its name is ours (``node_name`` included).
            self._events.on_started(execution_id, message.get("p"), self._host)
        elif kind == "p":
            self._events.on_progress(execution_id, message.get("f"), message.get("m"))
        elif kind == "x":
            if execution_id not in self._runs:
                return  # not ours any more (adopted elsewhere): not acknowledged either
            self._runs.discard(execution_id)
            # Acknowledged once the end is committed (exit_recorded), not now: a server
            # that dies before its commit leaves the exit record to the next server.
            self._events.on_exited(execution_id, exit_from_wire(message["info"]))

    def _release(self, execution_id: str) -> None:
        for message in self._held.pop(execution_id, []):
            self._deliver(execution_id, message)


class _EventStream(asyncio.StreamReaderProtocol):
    """The runner connection's protocol: the whole lines of each read go to ``on_lines``
    in the loop callback that received them, instead of through a ``StreamReader`` whose
    reading task is woken a loop iteration later. Its reader stays empty; it is there
    for the ``StreamWriter`` that the ``Outbox`` writes with. ``on_lost`` is told once
    the connection is gone (with the error, if one ended it)."""

    def __init__(
        self, on_lines: Callable[[list[bytes]], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.reader = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
        super().__init__(self.reader, loop=loop)
        self._on_lines = on_lines
        self._lines = LineBuffer()
        self._error: Exception | None = None
        self._stream_transport: asyncio.BaseTransport | None = None
        self.on_lost: Callable[[Exception | None], None] = lambda _error: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._stream_transport = transport

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        try:
            lines = self._lines.feed(data)
        except ValueError as exc:  # a line over MAX_LINE: the stream cannot be trusted
            self._error = exc
            if self._stream_transport is not None:
                self._stream_transport.close()
            return
        if lines:
            self._on_lines(lines)

    def eof_received(self) -> bool:
        super().eof_received()
        return False  # the runner closed its side: close ours (``connection_lost`` follows)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.on_lost(exc or self._error)


def runner_executor_factory(data_dir: str | os.PathLike[str]) -> Callable[[Any], RunnerExecutor]:
    """An ``executor_factory`` for ``JobHost`` that uses the runner of ``data_dir``."""
    return lambda events: RunnerExecutor(events, data_dir)

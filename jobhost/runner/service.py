"""The runner process: the job processes of one data dir, whoever serves it at the moment.

It is the local executor (``jobhost.executors.local``: pidfd, ``wait4``, pipes, the capped
output log, progress lines, timeouts, process groups) in a process of its own, behind a
unix socket. A server connects, starts and stops runs, and hears their events; when the
server goes away the runs go on, their output still read into their logs and their exit
kept (an *exit record*) until a server adopts the run and acknowledges its end.

Each run has at most one *owner*: the connection that started or last adopted it. Events
go to the owner only; a run whose owner left is *unclaimed* until a server adopts it
(or kills it: ``kill`` for a run no store knows, so nothing runs without a record).

Lifetime: started detached by the first server that needs it (``python -m jobhost.runner
DIR READY_FD``; it forks once so that nobody has to reap it), one per data dir (an
exclusive ``flock`` on ``runner.lock``); it exits by itself once it has had no run, no
exit record and no connection for ``IDLE_SECONDS``. Exit records nobody came back for
are dropped after ``RECORD_KEEP_SECONDS`` (the run is then recorded lost at reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
from pathlib import Path

from jobhost.errors import Conflict
from jobhost.execution.cgroups import ISOLATION_ENV, ISOLATION_NAME, Isolation, mode_named
from jobhost.executors.local import LocalExecutor
from jobhost.models import ExitInfo, LaunchSpec
from jobhost.runner.protocol import (
    LOCK_NAME,
    MAX_LINE,
    PROTOCOL,
    PROTOCOL_NAME,
    READY,
    SOCKET_NAME,
    Message,
    Outbox,
    decode,
    exit_to_wire,
    read_lines,
    short_path,
    spec_from_wire,
)

log = logging.getLogger(__name__)

IDLE_SECONDS = 2.0  # a server restarting with no run in flight pays one runner start-up
RECORD_KEEP_SECONDS = 7 * 24 * 3600.0
LOCK_WAIT_SECONDS = 10


class _Client:
    """One connection (a server, or a local command acting as its own owner)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed = False
        self._outbox = Outbox(writer)
        self._output: dict[str, int] = {}  # output totals not queued yet, coalesced

    def send(self, message: Message) -> None:
        if not self.closed:
            if self._output:  # totals read before this event go before it
                self._queue_output()
            self._outbox.send(message)

    def output(self, execution_id: str, total: int) -> None:
        """Output totals are sent once per loop iteration, however many reads happened."""
        if not self._output:
            asyncio.get_running_loop().call_soon(self._queue_output)
        self._output[execution_id] = total

    def _queue_output(self) -> None:
        if not self.closed:
            for execution_id, total in self._output.items():
                self._outbox.send({"e": "o", "i": execution_id, "t": total})
        self._output.clear()


class Runner:
    """The service; implements ``ExecutionEvents`` for its ``LocalExecutor``."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        isolation = Isolation.detect(mode_named(os.environ.get(ISOLATION_ENV, "auto")))
        self.executor = LocalExecutor(self, isolation=isolation)
        self._idle_seconds = idle_seconds
        self._clients: set[_Client] = set()
        self._owners: dict[str, _Client] = {}
        self._finished: dict[str, tuple[ExitInfo, float]] = {}  # exit records, unacknowledged
        self._progress: dict[str, Message] = {}  # the last report of each running run
        self._unwanted: set[str] = set()  # killed as unrecorded: no record to keep
        self._starting: set[str] = set()
        # Each run's secret values, for the server that adopts it (memory only).
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._idle: asyncio.TimerHandle | None = None
        self.done = asyncio.Event()

    # -- ExecutionEvents ----------------------------------------------------------------

    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        self._to_owner(execution_id, {"e": "s", "i": execution_id, "p": pid, "h": host})

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        client = self._owners.get(execution_id)
        if client is not None:
            client.output(execution_id, total_bytes)

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        report = {"e": "p", "i": execution_id, "f": fraction, "m": message}
        self._progress[execution_id] = report
        self._to_owner(execution_id, report)

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        self._progress.pop(execution_id, None)
        if execution_id in self._unwanted:
            self._unwanted.discard(execution_id)
            self._owners.pop(execution_id, None)
            self._secrets.pop(execution_id, None)
        else:
            loop = asyncio.get_running_loop()
            self._finished[execution_id] = (info, loop.time())
            self._to_owner(execution_id, self._exit_event(execution_id, info))
        self._check_idle()

    def _to_owner(self, execution_id: str, message: Message) -> None:
        client = self._owners.get(execution_id)
        if client is not None:
            client.send(message)

    @staticmethod
    def _exit_event(execution_id: str, info: ExitInfo) -> Message:
        return {"e": "x", "i": execution_id, "info": exit_to_wire(info)}

    # -- connections --------------------------------------------------------------------

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            log.warning(
                "Refused a connection from uid %d (the runner serves uid %d)", uid, os.getuid()
            )
            writer.close()
            return
        client = _Client(writer)
        self._clients.add(client)
        self._check_idle()
        try:
            async for lines in read_lines(reader):
                for line in lines:
                    try:
                        self._handle(client, decode(line))
                    except Exception:  # one bad message must not end the connection
                        log.exception("Cannot handle %r", line[:200])
        except (ConnectionError, ValueError) as exc:
            log.warning("Connection ended: %s", exc)
        finally:
            client.closed = True
            self._clients.discard(client)
            for execution_id, owner in list(self._owners.items()):
                if owner is client:
                    del self._owners[execution_id]
            writer.close()
            self._check_idle()

    def _handle(self, client: _Client, message: Message) -> None:
        op = message.get("op")
        if op == "start":
            spec = spec_from_wire(message["spec"])
            self._owners[spec.execution_id] = client
            self._starting.add(spec.execution_id)
            if spec.secrets:
                self._secrets[spec.execution_id] = spec.secrets
            self._start(spec)
        elif op == "stop":
            grace = float(message.get("grace", 0.0))
            asyncio.get_running_loop().create_task(self.executor.stop(message["i"], grace))
        elif op == "ack":
            execution_id = message["i"]
            if self._finished.pop(execution_id, None) is not None:
                self._owners.pop(execution_id, None)
                self._secrets.pop(execution_id, None)
            self._check_idle()
        elif op == "adopt":
            adopted = self._adopt(client, message["i"])
            secrets = list(self._secrets.get(message["i"], ())) if adopted else []
            client.send({"e": "r", "req": message["req"], "ok": adopted, "s": secrets})
            if adopted:
                self._catch_up(client, message["i"])
        elif op == "kill":
            client.send({"e": "r", "req": message["req"], "ok": self._kill(message["i"])})
        elif op == "list":
            client.send({"e": "r", "req": message["req"], "runs": self._list()})
        else:
            log.warning("Unknown operation %r", op)

    def _start(self, spec: LaunchSpec) -> None:
        """Spawn on a spawner thread; no task per start (``LocalExecutor.launch``)."""
        execution_id = spec.execution_id
        try:
            self.executor.launch(spec, lambda: self._starting.discard(execution_id))
        except Conflict as exc:
            log.warning("%s", exc)
            self._starting.discard(execution_id)

    def _held(self, execution_id: str) -> bool:
        return execution_id in self._starting or self.executor.describe(execution_id) is not None

    def _adopt(self, client: _Client, execution_id: str) -> bool:
        """Make ``client`` the owner; what it missed follows its reply (``_catch_up``)."""
        if execution_id in self._finished or (
            self._held(execution_id) and execution_id not in self._unwanted
        ):
            self._owners[execution_id] = client
            return True
        return False

    def _catch_up(self, client: _Client, execution_id: str) -> None:
        """After an adoption: the output total, the last progress, or the exit record."""
        if execution_id in self._finished:
            info, _ = self._finished[execution_id]
            client.send(self._exit_event(execution_id, info))
            return
        described = self.executor.describe(execution_id)
        if described is not None:
            client.output(execution_id, described[1])
        progress = self._progress.get(execution_id)
        if progress is not None:
            client.send(progress)

    def _kill(self, execution_id: str) -> bool:
        """End a run and keep no record of it (its store does not know it)."""
        self._finished.pop(execution_id, None)
        if not self._held(execution_id):
            self._owners.pop(execution_id, None)
            return False
        self._unwanted.add(execution_id)
        self._owners.pop(execution_id, None)
        self._secrets.pop(execution_id, None)
        asyncio.get_running_loop().create_task(self.executor.stop(execution_id, 0))
        return True

    def _list(self) -> list[Message]:
        runs: list[Message] = []
        for execution_id in self.executor.running_ids():
            described = self.executor.describe(execution_id)
            pid = described[0] if described else None
            owned = execution_id in self._owners
            runs.append({"id": execution_id, "pid": pid, "owned": owned, "ended": False})
        for execution_id in self._finished:
            owned = execution_id in self._owners
            runs.append({"id": execution_id, "pid": None, "owned": owned, "ended": True})
        return runs

    # -- lifetime -----------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._clients or self._starting or self.executor.running_ids():
            return
        loop = asyncio.get_running_loop()
        if self._finished:
            oldest = min(at for _, at in self._finished.values())
            self._idle = loop.call_at(oldest + RECORD_KEEP_SECONDS, self._expire_records)
        else:
            self._idle = loop.call_later(self._idle_seconds, self.done.set)

    def _expire_records(self) -> None:
        now = asyncio.get_running_loop().time()
        for execution_id, (_, at) in list(self._finished.items()):
            if at + RECORD_KEEP_SECONDS <= now:
                log.warning(
                    "Dropping the exit record of %s: no server came back for it", execution_id
                )
                del self._finished[execution_id]
                self._owners.pop(execution_id, None)
                self._secrets.pop(execution_id, None)
        self._idle = None
        self._check_idle()


def _take_lock(directory: Path, directory_fd: int) -> int | None:
    """The runner's lock, or None when another runner serves this folder."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(short_path(directory_fd, SOCKET_NAME))
        os.close(fd)
        return None  # it is alive and listening
    except OSError:
        pass  # it is on its way out: its lock goes in a moment
    finally:
        probe.close()
    signal.alarm(LOCK_WAIT_SECONDS)
    fcntl.flock(fd, fcntl.LOCK_EX)
    signal.alarm(0)
    return fd


async def serve(directory: Path, ready_fd: int, idle_seconds: float = IDLE_SECONDS) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    lock = _take_lock(directory, directory_fd)
    if lock is None:
        os.write(ready_fd, READY)
        os.close(ready_fd)
        return
    path = short_path(directory_fd, SOCKET_NAME)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / SOCKET_NAME)  # a runner that died left it: we hold the lock
    runner = Runner(idle_seconds)
    # For /healthz: how this runner confines runs (the server asks the file, not the socket).
    (directory / ISOLATION_NAME).write_text(runner.executor.isolation.describe() + "\n")
    (directory / PROTOCOL_NAME).write_text(f"{PROTOCOL}\n")
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(runner.serve_client, path, limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A signal for the server's terminal or service group is not meant for the jobs.
        loop.add_signal_handler(signum, log.info, "Ignoring signal %d", signum)
    os.write(ready_fd, READY)
    os.close(ready_fd)
    log.info("Runner %d serving %s", os.getpid(), directory)
    runner._check_idle()
    await runner.done.wait()
    server.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / SOCKET_NAME)
    os.close(lock)
    await runner.executor.aclose()
    log.info("Runner %d idle for %g s: exiting", os.getpid(), idle_seconds)

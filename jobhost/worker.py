"""The Celery side of scale-out: the app that ``celery -A jobhost.worker worker`` runs,
and the one task that runs an execution on a worker machine.

Start a worker with ``jobhost worker [--queue Q] [--concurrency N]`` (or the ``celery``
command above, with ``JOBHOST_CELERY_BROKER_URL`` set). The task
(``jobhost.run(spec, server_id)``) runs the job with the same primitive as the local
executor (``ChildProcess``: its own process group, merged stdout/stderr, a progress pipe,
a pidfd) inside a small asyncio loop, and talks back through the broker's Redis:

- events go to the server's stream ``jobhost:events:<server id>`` (``XADD ... MAXLEN ~``,
  named in ``jobhost:route:<id>`` for a server that re-adopts the run):
  ``started`` (pid, host), ``output`` (raw bytes, at most 64 KiB an entry, in order,
  with the stream ``offset`` of their first byte),
  ``progress``, and ``exited`` (exit status, rusage, stopped/timed out, the result JSON);
- stops arrive on the channel ``jobhost:control`` (and as the key ``jobhost:stop:<id>``
  for a stop asked before this task subscribed): SIGTERM, then SIGKILL of the group after
  the grace; the timeout (``spec.timeout_seconds``) is enforced here too;
- while the job runs, ``jobhost:alive:<id>`` is refreshed every ``HEARTBEAT_SECONDS`` with
  a TTL of ``HEARTBEAT_TTL_SECONDS``: when a worker dies, the key expires and the server
  ends the execution with an error.

What a worker must share with the server: the job folders and the data dir at the same
paths (``spec.cwd``, ``JOBHOST_STATE_DIR`` and the interpreter in ``argv`` are server
paths), and the broker. The job's environment, secrets included, travels through the
broker: it must be private to JobHost.

Tasks are acknowledged on receipt and prefetched one at a time: a task whose worker died
is not run a second time (the server has reported it as ended by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from jobhost.config import Settings
from jobhost.execution.cgroups import Isolation
from jobhost.execution.confinement import Confinement
from jobhost.execution.output import CHUNK
from jobhost.execution.process import MAX_CONTROL_LINE, ChildProcess, Exit, ProgressLines
from jobhost.execution.results import read_result_bytes
from jobhost.execution.termination import DRAIN_CHUNKS, MAX_RESULT_BYTES, Termination
from jobhost.models import LaunchSpec
from jobhost.redact import OutputMasker, mask_result, mask_text

log = logging.getLogger(__name__)

TASK_NAME = "jobhost.run"
DEFAULT_QUEUE = "jobhost"
CONTROL_CHANNEL = "jobhost:control"
STREAM_MAXLEN = 10_000  # entries; with 64 KiB output chunks at most ~640 MiB behind
HEARTBEAT_TTL_SECONDS = 10
HEARTBEAT_SECONDS = 3.0
STOP_KEY_TTL_SECONDS = 24 * 3600
ROUTE_TTL_SECONDS = 7 * 24 * 3600  # a run's events stay findable this long
RESULT_ENV = "JOBHOST_RESULT_PATH"
BROKER_ENV = "JOBHOST_CELERY_BROKER_URL"


def events_key(server_id: str) -> str:
    return f"jobhost:events:{server_id}"


def alive_key(execution_id: str) -> str:
    return f"jobhost:alive:{execution_id}"


def stop_key(execution_id: str) -> str:
    return f"jobhost:stop:{execution_id}"


def route_key(execution_id: str) -> str:
    """The stream a run's events go to: set by the worker when the run starts, so that
    any server can find them (``CeleryExecutor.adopt``)."""
    return f"jobhost:route:{execution_id}"


def position_key(server_id: str) -> str:
    """How far a server has read its stream (the stream entry ID), kept across restarts."""
    return f"jobhost:events-pos:{server_id}"


def make_app(broker_url: str) -> Celery:
    """A Celery app for JobHost's one task (the server sends by name, workers run it)."""
    celery = Celery("jobhost", broker=broker_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=DEFAULT_QUEUE,
        task_ignore_result=True,
        task_acks_late=False,  # never run a job twice after its worker died
        worker_prefetch_multiplier=1,  # a busy worker must not sit on queued runs
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    celery.task(name=TASK_NAME, bind=True, ignore_result=True)(run_task)
    return celery


def run_task(task: Any, spec: dict[str, Any], server_id: str) -> None:
    """The Celery task: run ``spec`` to its end and report through the server's stream.

    Events go to the broker's Redis (the one this task came from)."""
    broker_url = str(task.app.conf.broker_url or default_broker_url())
    asyncio.run(_serve(LaunchSpec(**spec), server_id, broker_url))


def default_broker_url() -> str:
    """``JOBHOST_CELERY_BROKER_URL``, else the settings' default."""
    default = Settings.model_fields["celery_broker_url"].default
    return os.environ.get(BROKER_ENV) or str(default)


async def _serve(spec: LaunchSpec, server_id: str, broker_url: str) -> None:
    client: aioredis.Redis = aioredis.Redis.from_url(broker_url)
    try:
        await WorkerRun(spec, server_id, client).run()
    finally:
        await client.aclose()


class WorkerRun:
    """One execution on this worker, from spawn to the ``exited`` entry."""

    def __init__(self, spec: LaunchSpec, server_id: str, client: aioredis.Redis) -> None:
        self.spec = spec
        self.client = client
        self.stream = events_key(server_id)
        self.host = socket.gethostname()
        self.output_bytes = 0
        self._termination: Termination | None = None  # once the process exists
        self._progress = ProgressLines()
        # redact: output, progress messages, the result and the error are masked here
        # already, so that neither the broker nor a server that re-adopts the run (and has
        # no secrets to mask with) ever holds a clear value.
        self._masker = OutputMasker(spec.secrets) if spec.secrets else None

    def _result(self, path: str) -> bytes | None:
        raw = _read_result(path)
        if raw is not None and len(raw) > MAX_RESULT_BYTES:
            # Refused by the server for its size alone; masking could shrink it below.
            return b" " * (MAX_RESULT_BYTES + 1)
        return mask_result(raw, self.spec.secrets)

    def _masked(self, text: str | None) -> str | None:
        return mask_text(text, self.spec.secrets) if text and self.spec.secrets else text

    async def _emit(self, kind: str, **fields: str | bytes | int | None) -> None:
        entry: dict[Any, Any] = {"type": kind, "id": self.spec.execution_id}
        entry.update({name: value for name, value in fields.items() if value is not None})
        await self.client.xadd(self.stream, entry, maxlen=STREAM_MAXLEN, approximate=True)

    async def _stop_requested(self) -> float | None:
        raw = await self.client.get(stop_key(self.spec.execution_id))
        return None if raw is None else float(raw)

    async def run(self) -> None:
        spec = self.spec
        result_dir = tempfile.mkdtemp(prefix="jobhost-result-")
        env = dict(spec.env)
        result_file = os.path.join(result_dir, "result.json")
        if RESULT_ENV in env:  # the server's path means nothing here: a local one instead
            env[RESULT_ENV] = result_file
        try:
            if await self._stop_requested() is not None:  # stopped while it was queued
                await self._emit("exited", stopped=1, output_bytes=0)
                return
            try:
                if not spec.argv:
                    raise ValueError("the command is empty")
                # The isolation hook (jobhost.execution.confinement): cgroup, rlimits, run_as.
                local = dataclasses.replace(spec, env=env, result_path=result_file)
                if spec.run_as is not None:  # the run's user must reach its result file
                    os.chmod(result_dir, 0o711)  # noqa: S103  # traversal only, no listing
                confinement = Confinement.prepare(Isolation.detect(), local)
                process = ChildProcess.spawn(spec.argv, spec.cwd, env, confinement=confinement)
                self._termination = Termination(process.signal)
            except (OSError, ValueError) as exc:
                # The program only: arguments and environment may hold secret values.
                program = shlex.quote(spec.argv[0]) if spec.argv else "job"
                error = self._masked(f"Cannot start {program}: {exc}")
                await self._emit("exited", error=error, output_bytes=0)
                return
            try:
                exit = await self._supervise(process)
            except BaseException:
                process.signal(signal.SIGKILL)  # never leave a job nobody reports on
                raise
            finally:
                process.close()
            if self._masker is not None and (rest := self._masker.flush()):
                self._masker = None
                await self._send_output(rest)
            await self._emit(
                "exited",
                exit_code=exit.exit_code,
                exit_signal=exit.exit_signal,
                cpu_seconds=repr(exit.cpu_seconds),
                peak_rss_bytes=exit.peak_rss_bytes,
                output_bytes=self.output_bytes,
                stopped=int(self._termination.stopped),
                timed_out=int(self._termination.timed_out),
                result=self._result(result_file),
                error=self._masked(exit.error),
            )
        finally:
            shutil.rmtree(result_dir, ignore_errors=True)
            await self.client.delete(alive_key(spec.execution_id), stop_key(spec.execution_id))

    async def _supervise(self, process: ChildProcess) -> Exit:
        loop = asyncio.get_running_loop()
        spec = self.spec
        exited: asyncio.Future[Exit] = loop.create_future()

        def on_pidfd() -> None:
            exit = process.reap()
            if exit is not None and not exited.done():
                loop.remove_reader(process.pidfd)
                exited.set_result(exit)

        loop.add_reader(process.pidfd, on_pidfd)
        alive = alive_key(spec.execution_id)
        await self.client.set(alive, self.host, ex=HEARTBEAT_TTL_SECONDS)
        await self.client.set(route_key(spec.execution_id), self.stream, ex=ROUTE_TTL_SECONDS)
        await self._emit("started", pid=process.pid, host=self.host)
        pubsub: Any = self.client.pubsub()  # redis-py leaves PubSub partly untyped
        await pubsub.subscribe(CONTROL_CHANNEL)
        timeout: asyncio.TimerHandle | None = None
        helpers = [
            loop.create_task(self._heartbeat(alive)),
            loop.create_task(self._listen(pubsub, process)),
        ]
        try:
            grace = await self._stop_requested()  # asked before we subscribed
            if grace is not None:
                self._terminate(process, grace, stopped=True)
            if spec.timeout_seconds is not None and spec.timeout_seconds > 0:
                timeout = loop.call_later(
                    spec.timeout_seconds,
                    lambda: self._terminate(process, spec.stop_grace_seconds, timed_out=True),
                )
            pumps = [
                self._pump(process.output_fd, CHUNK, exited, self._send_output),
                self._pump(process.control_fd, MAX_CONTROL_LINE, exited, self._send_progress),
            ]
            await asyncio.gather(*pumps)
            return await exited
        finally:
            loop.remove_reader(process.pidfd)
            if timeout is not None:
                timeout.cancel()
            if self._termination is not None:
                self._termination.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await pubsub.aclose()

    async def _heartbeat(self, alive: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            with contextlib.suppress(OSError, aioredis.RedisError):
                await self.client.set(alive, self.host, ex=HEARTBEAT_TTL_SECONDS)

    async def _listen(self, pubsub: Any, process: ChildProcess) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                request = json.loads(message["data"])
                if request.get("execution_id") != self.spec.execution_id:
                    continue
                grace = float(request.get("grace", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            self._terminate(process, grace, stopped=True)

    def _terminate(
        self, process: ChildProcess, grace: float, *, stopped: bool = False, timed_out: bool = False
    ) -> None:
        """SIGTERM now, SIGKILL after ``grace`` (``Termination``: the rules every
        supervisor of a job process shares)."""
        if process.exit is None and self._termination is not None:
            self._termination.request(grace, stopped=stopped, timed_out=timed_out)

    async def _pump(
        self,
        fd: int,
        size: int,
        exited: asyncio.Future[Exit],
        handle: Callable[[bytes], Awaitable[None]],
    ) -> None:
        """Forward what ``fd`` yields until its end; after the exit, drain what is buffered.

        Each chunk is sent before the next is read, so a job that prints faster than the
        broker takes it is slowed by its full pipe instead of filling the worker's memory.
        """
        drained = 0
        while drained < DRAIN_CHUNKS:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                if exited.done():
                    return
                await _readable_or_done(fd, exited)
                continue
            except OSError:
                return
            if not data:
                return
            if exited.done():
                drained += 1
            await handle(data)

    async def _send_output(self, data: bytes) -> None:
        if self._masker is not None:
            data = self._masker.feed(data)
            if not data:
                return
        offset = self.output_bytes  # lets a server that re-adopts the run skip what it has
        self.output_bytes += len(data)
        await self._emit("output", data=data, offset=offset)

    async def _send_progress(self, data: bytes) -> None:
        for fraction, message in self._progress.feed(data):
            await self._emit(
                "progress",
                fraction=None if fraction is None else repr(fraction),
                message=self._masked(message),
            )


async def _readable_or_done(fd: int, done: asyncio.Future[Any]) -> None:
    """Return once ``fd`` is readable or ``done`` is settled."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake(*_: object) -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    done.add_done_callback(wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        done.remove_done_callback(wake)


def _read_result(path: str) -> bytes | None:
    raw, error = read_result_bytes(path, remove=False)  # the directory goes as a whole
    if error is not None:
        log.warning("%s (%s)", error, path)
    return raw


app = make_app(default_broker_url())

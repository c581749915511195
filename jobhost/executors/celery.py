"""The distributed executor: executions run on Celery workers, events come back by Redis.

``start`` sends the launch spec (a plain dict) as the task ``jobhost.run`` to the queue
``spec.queue or "jobhost"``; the worker side lives in ``jobhost.worker``. The spec holds
the job's complete environment, secrets included, so the broker must be private to
JobHost. Workers run the job in ``spec.cwd``: the job folders (and the data dir, for
``JOBHOST_STATE_DIR``) must exist at the same paths on every worker.

Back on the server, one task awaits the stream ``jobhost:events:<server id>``
(``XREAD BLOCK``) and turns its entries into ``ExecutionEvents`` calls on the loop.
Output is appended here, to the execution's ``OutputLog``, so offsets, the cap, live
follow and ``read_output`` behave exactly as with the local executor. The result JSON
arrives in the ``exited`` entry and is written to ``spec.result_path`` before
``on_exited``.

``stop`` sets ``jobhost:stop:<id>`` (for a task not picked up yet) and publishes on
``jobhost:control``; the worker holding the execution signals its process group.

A lost worker is noticed without polling: keyspace notifications are switched on
(``notify-keyspace-events Ex``) and a second task listens for expired keys; when the
heartbeat key ``jobhost:alive:<id>`` of a running execution expires, it ends with
``Worker <host> stopped answering (no heartbeat for 10 s)`` (recorded as lost), and a
stop is published in case the worker was only cut off.

Restarts: the server ID is kept in Redis per host and data dir
(``jobhost:server-id:<host>:<data dir>``), so a restarted server reads the same stream,
and how far it has read is kept too (``jobhost:events-pos:<server id>``, after each
batch, and never past an exit that is not committed yet). ``adopt`` re-attaches to a
run a previous server started, from any host: the worker names the run's stream in
``jobhost:route:<id>``; the entries since that
stream's saved position are replayed, then followed live. Output entries carry their
stream offset, so the log is continued from its size with no byte written twice.

The event reader blocks at most ``BLOCK_MS`` per ``XREAD`` on a connection with a
socket timeout, keepalive and health check: a half-open connection (a Redis restarted
behind a NAT, a dropped route) raises a timeout instead of stopping all delivery
silently, and the reader reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from kombu.utils.url import maybe_sanitize_url

from jobhost.abc import ExecutionEvents
from jobhost.config import Settings
from jobhost.errors import Conflict
from jobhost.execution.output import OutputLog
from jobhost.models import Execution, ExitInfo, LaunchSpec, new_id
from jobhost.worker import (
    CONTROL_CHANNEL,
    DEFAULT_QUEUE,
    HEARTBEAT_TTL_SECONDS,
    ROUTE_TTL_SECONDS,
    STOP_KEY_TTL_SECONDS,
    TASK_NAME,
    alive_key,
    events_key,
    make_app,
    position_key,
    route_key,
    stop_key,
)

log = logging.getLogger(__name__)

ALIVE_PREFIX = alive_key("")
READ_COUNT = 512  # entries per XREAD: bounds one loop iteration's work
RECONNECT_SECONDS = 1.0
BLOCK_MS = 5000  # an XREAD waits at most this long, so a dead connection is noticed
SOCKET_TIMEOUT_SECONDS = BLOCK_MS / 1000 + 10.0
HEALTH_CHECK_SECONDS = 15
STREAM_KEEP_SECONDS = 3600  # after aclose, the stream outlives the runs still reporting
SEND_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}


@dataclass(eq=False, slots=True)
class _Remote:
    spec: LaunchSpec
    output: OutputLog
    host: str | None = None  # known once the worker reports ``started``
    last_entry: tuple[int, int] = (0, 0)  # the newest stream entry handled
    held: list[tuple[bytes, dict[bytes, bytes]]] | None = field(default=None)  # adopting


def _raw(value: bytes | str | None) -> bytes | None:
    """A Redis reply as bytes (the client may decode, or not)."""
    return value.encode() if isinstance(value, str) else value


LAST_SEQUENCE = 2**64 - 1  # the largest sequence part of a stream entry ID


def _entry_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _int(fields: dict[bytes, bytes], name: str) -> int | None:
    raw = fields.get(name.encode())
    return None if raw is None else int(raw)


def _float(fields: dict[bytes, bytes], name: str) -> float | None:
    raw = fields.get(name.encode())
    return None if raw is None else float(raw)


class CeleryExecutor:
    """Hands executions to Celery workers (see the module docstring)."""

    def __init__(self, events: ExecutionEvents, settings: Settings) -> None:
        self._events = events
        self._settings = settings
        self._broker_url = settings.celery_broker_url
        self._app = make_app(settings.celery_broker_url)
        self._server_id = new_id()  # replaced by the kept one when the stream opens
        self._stream = events_key(self._server_id)
        self._streams: dict[str, bytes] = {}  # what the reader follows → its position
        self._resume: dict[str, bytes] = {}  # each stream's position when first followed
        self._reader: aioredis.Redis | None = None
        self._closing = False
        self._runs: dict[str, _Remote] = {}
        # Exits read from this server's stream and not committed yet (exit_recorded): the
        # saved position stays before the first, so a next server reads them again.
        self._unrecorded: dict[str, bytes] = {}
        # One thread: kombu's publish is blocking, and one at a time keeps the order.
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="jobhost-celery-send")
        self._redis: aioredis.Redis | None = None
        self._opening: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []  # the two listeners
        self._stops: set[asyncio.Task[None]] = set()  # stops published after a loss

    @property
    def server_id(self) -> str:
        return self._server_id

    def running_ids(self) -> list[str]:
        """Executions handed to workers that have not reported their end."""
        return list(self._runs)

    # -- the Executor contract ---------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> None:
        """Send ``spec`` to its queue; ``on_started`` follows when a worker runs it."""
        execution_id = spec.execution_id
        if execution_id in self._runs:
            raise Conflict(f"Execution {execution_id!r} is already running on a Celery worker")
        loop = asyncio.get_running_loop()
        try:
            output = OutputLog(spec.log_path, spec.max_output_bytes, spec.secrets)  # redact
        except OSError as exc:
            self._fail(loop, execution_id, f"Cannot open the output log {spec.log_path}: {exc}")
            return
        self._runs[execution_id] = _Remote(spec, output)
        queue = spec.queue or DEFAULT_QUEUE
        try:
            await self._open()
            await loop.run_in_executor(self._sender, self._send, spec, queue)
        except Exception as exc:  # the broker is down or refuses: this run cannot start
            self._forget(execution_id)
            url = maybe_sanitize_url(self._broker_url)
            error = f"Cannot hand the run to a Celery worker (queue {queue!r}, broker {url}): {exc}"
            self._fail(loop, execution_id, error)

    async def stop(self, execution_id: str, grace_seconds: float) -> None:
        """Ask the worker holding the run to stop it; no-op when it is not running here."""
        if execution_id in self._runs:
            await self._publish_stop(execution_id, grace_seconds)

    async def terminate_orphan(self, execution: Execution) -> bool:
        """Stop a run a previous server left on a worker; True when a worker still held it."""
        try:
            client = await self._client()
            held = bool(await client.exists(alive_key(execution.id)))
            await self._publish_stop(execution.id, 0)
        except (OSError, aioredis.RedisError) as exc:
            log.warning("Cannot ask the workers to end %s: %s", execution.id, exc)
            return False
        return held

    def adopted_secrets(self, execution_id: str) -> tuple[str, ...]:
        """Not known here (the values never come back from the broker), and not needed:
        the worker masks output, progress messages, the result and the error itself."""
        return ()

    def exit_recorded(self, execution_id: str) -> None:
        """The saved position may pass this run's exit now (at the next batch)."""
        self._unrecorded.pop(execution_id, None)

    async def adopt(self, execution: Execution) -> bool:
        """Re-attach to a run an earlier server started on a worker (from any host).

        The run's stream is named by its worker (``jobhost:route:<id>``); the entries
        since that stream's saved position are replayed on the next loop iteration (a run
        that ended meanwhile reports its end then), and the stream is followed from there.
        False when no worker ever took the run, or its worker stopped answering."""
        execution_id = execution.id
        if execution_id in self._runs:
            return True
        try:
            await self._open()
            client = await self._client()
            raw_stream = _raw(await client.get(route_key(execution_id)))
            host = _raw(await client.get(alive_key(execution_id)))
        except (OSError, aioredis.RedisError) as exc:
            log.warning("Cannot look for %s on the workers: %s", execution_id, exc)
            return False
        if raw_stream is None:
            return False
        stream = raw_stream.decode()
        spec = self._adopted_spec(execution)
        try:
            output = OutputLog(spec.log_path, spec.max_output_bytes, resume=True)
        except OSError as exc:
            log.warning("Cannot continue the log of %s: %s", execution_id, exc)
            return False
        run = _Remote(spec, output, host=None if host is None else host.decode(), held=[])
        self._runs[execution_id] = run
        try:
            ended = await self._replay(client, stream, run)
        except (OSError, aioredis.RedisError) as exc:
            log.warning("Cannot read the events of %s: %s", execution_id, exc)
            self._forget(execution_id, finish=False)
            return False
        if run.host is None and not ended:
            self._forget(execution_id, finish=False)
            return False  # neither alive nor ended: its worker is gone
        asyncio.get_running_loop().call_soon(self._release, run)
        return True

    def _adopted_spec(self, execution: Execution) -> LaunchSpec:
        logs = str(self._settings.logs_dir.resolve())
        return LaunchSpec(
            execution_id=execution.id,
            job_id=execution.job_id,
            argv=[],
            cwd="",
            env={},
            log_path=os.path.join(logs, f"{execution.id}.log"),
            result_path=os.path.join(logs, f"{execution.id}.result.json"),
            max_output_bytes=self._settings.max_output_bytes,
        )

    async def _replay(self, client: aioredis.Redis, stream: str, run: _Remote) -> bool:
        """Hold the run's entries since the stream's saved position; True if it ended."""
        assert run.held is not None
        if stream not in self._streams:
            saved = _raw(await client.get(position_key(stream.rsplit(":", 1)[1])))
            self._resume[stream] = saved or b"0-0"
        start = self._resume[stream]
        execution_id = run.spec.execution_id.encode()
        ended = False
        while True:
            entries: Any = await client.xrange(stream, min=f"({start.decode()}", count=READ_COUNT)
            if not entries:
                break
            for entry_id, fields in entries:
                start = entry_id
                if fields.get(b"id") == execution_id:
                    run.held.append((entry_id, fields))
                    if fields.get(b"type") == b"exited":
                        ended = True
                        self._note_exit(stream, run.spec.execution_id, entry_id)
        self._streams.setdefault(stream, start)  # followed live from here on
        return ended

    def _release(self, run: _Remote) -> None:
        """Deliver what an adoption held back, in stream order, each entry once."""
        held, run.held = run.held or [], None
        execution_id = run.spec.execution_id
        self._events.on_output(execution_id, run.output.total_bytes)
        for entry_id, fields in sorted(held, key=lambda item: _entry_key(item[0])):
            if self._runs.get(execution_id) is run:
                self._handle(fields, entry_id, replay=True)

    async def aclose(self) -> None:
        """Stop listening; runs on workers go on (their logs here end where they are)."""
        if self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._reader is not None:  # a blocked XREAD ends with its connection
            await self._reader.connection_pool.disconnect()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for execution_id in list(self._runs):
            self._forget(execution_id, finish=False)  # the next server continues the logs
        if self._reader is not None:
            await self._reader.aclose()
            self._reader = None
        if self._redis is not None:
            with contextlib.suppress(OSError, aioredis.RedisError):
                await self._redis.expire(self._stream, STREAM_KEEP_SECONDS)
            await self._redis.aclose()
            self._redis = None
        self._sender.shutdown(wait=True)

    # -- connections -------------------------------------------------------------------

    async def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self._broker_url,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_SECONDS,
            )
        return self._redis

    def _reader_client(self) -> aioredis.Redis:
        """The event reader's own connection: a read that hangs past the longest block
        times out (a half-open connection), and the reader reconnects."""
        if self._reader is None:
            self._reader = aioredis.Redis.from_url(
                self._broker_url,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_SECONDS,
            )
        return self._reader

    async def _kept_server_id(self, client: aioredis.Redis) -> str:
        """This host and data dir's server ID: the same after a restart."""
        key = f"jobhost:server-id:{socket.gethostname()}:{self._settings.data_dir.resolve()}"
        await client.set(key, self._server_id, nx=True)
        await client.expire(key, ROUTE_TTL_SECONDS)
        kept = _raw(await client.get(key))
        return self._server_id if kept is None else kept.decode()

    async def _open(self) -> None:
        """On first use: keyspace notifications on, the two listeners running."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open_once())
        try:
            await asyncio.shield(self._opening)
        except Exception:
            self._opening = None  # try again with the next start
            raise

    async def _open_once(self) -> None:
        client = await self._client()
        self._server_id = await self._kept_server_id(client)
        self._stream = events_key(self._server_id)
        saved = _raw(await client.get(position_key(self._server_id)))
        self._resume[self._stream] = saved or b"0-0"
        self._streams[self._stream] = saved or b"0-0"
        await self._enable_expiry_events(client)
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
        pubsub: Any = client.pubsub()  # redis-py leaves PubSub partly untyped
        await pubsub.subscribe(f"__keyevent@{db}__:expired")
        loop = asyncio.get_running_loop()
        reader = self._reader_client()
        self._tasks.append(loop.create_task(self._read_events(reader), name="jobhost-events"))
        self._tasks.append(loop.create_task(self._watch_expiry(pubsub), name="jobhost-expiry"))

    async def _enable_expiry_events(self, client: aioredis.Redis) -> None:
        try:
            current = (await client.config_get("notify-keyspace-events")).get(
                "notify-keyspace-events", ""
            )
            current = current.decode() if isinstance(current, bytes) else str(current)
            wanted = "".join(flag for flag in "Ex" if flag not in current)
            if "A" in current:
                wanted = wanted.replace("x", "")
            if wanted:
                await client.config_set("notify-keyspace-events", current + wanted)
        except aioredis.ResponseError as exc:  # managed Redis often forbids CONFIG
            log.warning(
                "Cannot enable keyspace notifications (%s): lost workers go unnoticed until "
                "the Redis server has notify-keyspace-events set to 'Ex'",
                exc,
            )

    def _send(self, spec: LaunchSpec, queue: str) -> None:
        self._app.send_task(
            TASK_NAME,
            args=[asdict(spec), self._server_id],
            queue=queue,
            retry=True,
            retry_policy=SEND_RETRY,
        )

    async def _publish_stop(self, execution_id: str, grace_seconds: float) -> None:
        client = await self._client()
        grace = max(0.0, grace_seconds)
        await client.set(stop_key(execution_id), repr(grace), ex=STOP_KEY_TTL_SECONDS)
        message = json.dumps({"execution_id": execution_id, "grace": grace})
        await client.publish(CONTROL_CHANNEL, message)

    # -- the two listeners -------------------------------------------------------------

    async def _read_events(self, client: aioredis.Redis) -> None:
        """Follow the streams (this server's, and those of runs adopted from others);
        the own stream's position is saved after each batch, for the next server."""
        while not self._closing:
            try:
                streams: dict[Any, Any] = dict(self._streams)
                reply: Any = await client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if self._closing:
                    return
                log.warning("Lost the Redis event stream (%s); reconnecting", exc)
                await client.connection_pool.disconnect()
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            for raw_stream, entries in reply or []:
                stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
                for entry_id, fields in entries:
                    self._streams[stream] = entry_id
                    if fields.get(b"type") == b"exited":
                        self._note_exit(stream, _text(fields, "id") or "", entry_id)
                    try:
                        self._handle(fields, entry_id)
                    except Exception:  # one bad entry must not end the listener
                        log.exception("Cannot handle event %r", fields)
            if reply:
                with contextlib.suppress(OSError, aioredis.RedisError):
                    await client.set(
                        position_key(self._server_id), self._saved_position(), ex=ROUTE_TTL_SECONDS
                    )

    def _note_exit(self, stream: str, execution_id: str, entry_id: bytes) -> None:
        """An exit on this server's own stream, of a run it follows, until committed."""
        if stream == self._stream and execution_id in self._runs:
            self._unrecorded.setdefault(execution_id, entry_id)

    def _saved_position(self) -> bytes:
        """How far the next server may skip: the read position, or just before the first
        exit not committed yet."""
        position = self._streams[self._stream]
        if not self._unrecorded:
            return position
        first = min(self._unrecorded.values(), key=_entry_key)
        if _entry_key(first) > _entry_key(position):
            return position
        ms, seq = _entry_key(first)
        before = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{LAST_SEQUENCE}"
        return before.encode()

    def _handle(self, fields: dict[bytes, bytes], entry_id: bytes, *, replay: bool = False) -> None:
        execution_id = _text(fields, "id") or ""
        run = self._runs.get(execution_id)
        if run is None:
            return  # ended already (a lost worker that came back, or a stale entry)
        if run.held is not None:
            run.held.append((entry_id, fields))  # being adopted: delivered in order then
            return
        position = _entry_key(entry_id)
        if position <= run.last_entry:
            return  # seen already (replayed, and read live too)
        run.last_entry = position
        kind = _text(fields, "type")
        if kind == "output":
            self._output(run, fields)
        elif kind == "started":
            run.host = _text(fields, "host")
            if not replay:
                self._events.on_started(execution_id, _int(fields, "pid"), run.host or "")
        elif kind == "progress":
            fraction = _float(fields, "fraction")
            self._events.on_progress(execution_id, fraction, _text(fields, "message"))
        elif kind == "exited":
            self._exited(run, fields)

    def _output(self, run: _Remote, fields: dict[bytes, bytes]) -> None:
        data = fields.get(b"data", b"")
        offset = _int(fields, "offset")
        if offset is not None and offset < run.output.total_bytes:
            data = data[run.output.total_bytes - offset :]  # written before the adoption
            if not data:
                return
        try:
            run.output.write(data)
        except OSError as exc:
            run.output.total_bytes += len(data)
            log.warning("Output of %s is being lost: %s", run.spec.execution_id, exc)
        self._events.on_output(run.spec.execution_id, run.output.total_bytes)

    def _exited(self, run: _Remote, fields: dict[bytes, bytes]) -> None:
        execution_id = run.spec.execution_id
        result = fields.get(b"result")
        if result is not None:
            try:
                with open(run.spec.result_path, "wb") as handle:
                    handle.write(result)
            except OSError as exc:
                log.warning("Cannot write the result of %s: %s", execution_id, exc)
        output_bytes = run.output.total_bytes
        self._forget(execution_id)
        self._events.on_exited(
            execution_id,
            ExitInfo(
                exit_code=_int(fields, "exit_code"),
                exit_signal=_int(fields, "exit_signal"),
                cpu_seconds=_float(fields, "cpu_seconds"),
                peak_rss_bytes=_int(fields, "peak_rss_bytes"),
                output_bytes=output_bytes,
                timed_out=_int(fields, "timed_out") == 1,
                stopped=_int(fields, "stopped") == 1,
                error=_text(fields, "error"),
            ),
        )

    async def _watch_expiry(self, pubsub: Any) -> None:
        try:
            while True:
                try:
                    # A bounded wait, so that the client's health check runs when idle.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=BLOCK_MS / 1000
                    )
                    if message is not None and message.get("type") == "message":
                        self._expired(message["data"])
                except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                    if self._closing:
                        return
                    log.warning("Lost the Redis expiry events (%s); reconnecting", exc)
                    await asyncio.sleep(RECONNECT_SECONDS)
                    await self._recheck_alive()
        finally:
            await pubsub.aclose()

    def _expired(self, key: bytes) -> None:
        name = key.decode("utf-8", errors="replace")
        if name.startswith(ALIVE_PREFIX):
            self._lost(name[len(ALIVE_PREFIX) :])

    async def _recheck_alive(self) -> None:
        """After a reconnect: an expiry may have been missed meanwhile."""
        client = await self._client()
        for execution_id, run in list(self._runs.items()):
            if run.host is not None and not await client.exists(alive_key(execution_id)):
                self._lost(execution_id)

    def _lost(self, execution_id: str) -> None:
        run = self._runs.get(execution_id)
        if run is None or run.host is None:
            return  # ended already, or not started: no heartbeat was ever promised
        output_bytes = run.output.total_bytes
        error = f"Worker {run.host} stopped answering (no heartbeat for {HEARTBEAT_TTL_SECONDS} s)"
        self._forget(execution_id)
        self._events.on_exited(
            execution_id, ExitInfo(None, None, output_bytes=output_bytes, error=error, lost=True)
        )
        # The worker may only be cut off: if it comes back, it must not keep the job.
        task = asyncio.get_running_loop().create_task(self._publish_stop(execution_id, 0))
        self._stops.add(task)
        task.add_done_callback(self._stop_published)

    # -- bookkeeping -------------------------------------------------------------------

    def _forget(self, execution_id: str, *, finish: bool = True) -> None:
        """Drop the run; ``finish`` its log (else leave it for a server that resumes it)."""
        run = self._runs.pop(execution_id, None)
        if run is None:
            return
        try:
            if finish:
                run.output.close()
            else:
                run.output.release()
        except OSError as exc:
            log.warning("Cannot finish the output log of %s: %s", execution_id, exc)

    def _stop_published(self, task: asyncio.Task[None]) -> None:
        self._stops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("Cannot publish a stop: %s", task.exception())

    def _fail(self, loop: asyncio.AbstractEventLoop, execution_id: str, error: str) -> None:
        info = ExitInfo(exit_code=None, exit_signal=None, error=error)
        loop.call_soon(self._events.on_exited, execution_id, info)

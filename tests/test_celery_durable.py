"""Celery runs survive a restart of the server, and a dead event connection is replaced.

Real Redis, a real Celery worker (the fixtures of ``test_celery_executor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from jobhost.config import Settings
from jobhost.executors.celery import CeleryExecutor
from jobhost.models import Execution, ExecutionStatus, ExitInfo, LaunchSpec, Trigger
from jobhost.worker import alive_key, events_key, route_key
from tests import test_local_executor as contract
from tests.test_celery_executor import BROKER_URL, Worker, broker, clean_keys, worker

pytestmark = pytest.mark.redis

__all__ = ["broker", "clean_keys", "worker"]  # fixtures, used by name

LINES = 30
COUNTER = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.1; done"


def expected_lines() -> str:
    return "".join(f"line {i}\n" for i in range(1, LINES + 1))


def record(spec: LaunchSpec) -> Execution:
    return Execution(
        id=spec.execution_id,
        job_id=spec.job_id,
        status=ExecutionStatus.RUNNING,
        trigger=Trigger.USER,
        user=None,
    )


def settings(tmp_path: Path, broker_url: str = BROKER_URL) -> Settings:
    return Settings(celery_broker_url=broker_url, data_dir=tmp_path / "data")


def spec_for(tmp_path: Path, execution_id: str, script: str, queue: str) -> LaunchSpec:
    logs = (tmp_path / "data" / "logs").resolve()
    return dataclasses.replace(
        contract.make_spec(tmp_path, execution_id, contract.sh(script)),
        log_path=str(logs / f"{execution_id}.log"),
        result_path=str(logs / f"{execution_id}.result.json"),
        max_output_bytes=Settings().max_output_bytes,
        queue=queue,
    )


async def start_then_leave(tmp_path: Path, spec: LaunchSpec) -> None:
    """A server starts ``spec``, sees its first output and stops; the run goes on."""
    events = contract.Recorder()
    first = CeleryExecutor(events, settings(tmp_path))
    await first.start(spec)
    await events.until(lambda: events.outputs[spec.execution_id])
    await first.aclose()


async def adopted_exit(tmp_path: Path, spec: LaunchSpec) -> ExitInfo:
    """The next server adopts the run and hears its end."""
    events = contract.Recorder()
    second = CeleryExecutor(events, settings(tmp_path))
    try:
        assert await second.adopt(record(spec))
        return await events.exited(spec.execution_id)
    finally:
        await second.aclose()


async def test_a_server_restart_keeps_a_worker_run_with_all_its_output(
    tmp_path: Path, worker: Worker
) -> None:
    spec = spec_for(tmp_path, uuid.uuid4().hex, COUNTER, worker.queue)
    await start_then_leave(tmp_path, spec)  # the run goes on on its worker
    info = await adopted_exit(tmp_path, spec)
    assert (info.exit_code, info.error, info.lost) == (0, None, False)
    assert Path(spec.log_path).read_text() == expected_lines()  # each byte once, in order
    assert info.output_bytes == len(expected_lines())


async def test_a_run_that_ended_between_two_servers_is_reported_to_the_second(
    tmp_path: Path, worker: Worker
) -> None:
    spec = spec_for(tmp_path, uuid.uuid4().hex, "echo one; sleep 1; echo two; exit 4", worker.queue)
    await start_then_leave(tmp_path, spec)
    client = redis.Redis.from_url(BROKER_URL)
    try:  # wait for the worker to finish it while no server listens
        while client.exists(alive_key(spec.execution_id)):
            await asyncio.sleep(0.2)
    finally:
        client.close()
    info = await adopted_exit(tmp_path, spec)
    assert info.exit_code == 4
    assert Path(spec.log_path).read_text() == "one\ntwo\n"


async def test_a_run_no_worker_ever_took_is_not_adopted(
    tmp_path: Path, broker: redis.Redis
) -> None:
    executor = CeleryExecutor(contract.Recorder(), settings(tmp_path))
    try:
        spec = spec_for(tmp_path, uuid.uuid4().hex, "true", "nobody-consumes-this")
        assert not await executor.adopt(record(spec))
    finally:
        await executor.aclose()


class FreezingProxy:
    """A TCP proxy to Redis whose existing connections can be frozen: nothing is
    forwarded on them any more, and nothing closes them (a half-open connection)."""

    def __init__(self) -> None:
        self.frozen: set[asyncio.StreamWriter] = set()
        self._live: set[asyncio.StreamWriter] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/{BROKER_URL.rsplit('/', 1)[1]}"

    def freeze(self) -> None:
        self.frozen |= self._live

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers.append(up_writer)
        self._live.add(writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, writer)
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if client in self.frozen:
                    continue  # swallowed: the peer hears nothing, and no FIN either
                sink.write(data)
                await sink.drain()

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[FreezingProxy]:
    started = FreezingProxy()
    yield started
    await started.aclose()


async def test_a_half_open_event_connection_is_noticed_and_replaced(
    tmp_path: Path, broker: redis.Redis, proxy: FreezingProxy
) -> None:
    url = await proxy.start()
    events = contract.Recorder()
    executor = CeleryExecutor(events, settings(tmp_path, url))
    spec = spec_for(tmp_path, uuid.uuid4().hex, "true", "unused")
    stream = events_key(uuid.uuid4().hex)
    # Acting as a worker that runs ``spec`` and reports to ``stream``.
    broker.set(route_key(spec.execution_id), stream)
    broker.set(alive_key(spec.execution_id), "worker-host", ex=60)
    try:
        assert await executor.adopt(record(spec))
        proxy.freeze()  # every connection the executor has is dead now, silently
        broker.xadd(stream, {"type": "output", "id": spec.execution_id, "data": b"hi\n"})
        broker.xadd(stream, {"type": "exited", "id": spec.execution_id, "exit_code": 0})
        info = await events.exited(spec.execution_id)
    finally:
        await executor.aclose()
    assert info.exit_code == 0
    assert Path(spec.log_path).read_text() == "hi\n"


async def test_a_second_stop_with_a_shorter_grace_ends_a_worker_run_sooner(
    tmp_path: Path, worker: Worker
) -> None:
    events = contract.Recorder()
    executor = CeleryExecutor(events, settings(tmp_path))
    # Ignores SIGTERM (and so does its sleep): only the SIGKILL ends it.
    spec = spec_for(tmp_path, uuid.uuid4().hex, "trap '' TERM; echo up; sleep 600", worker.queue)
    try:
        await executor.start(spec)
        await events.until(lambda: events.outputs[spec.execution_id])
        await executor.stop(spec.execution_id, 3600)
        await executor.stop(spec.execution_id, 0.2)  # before: the first grace held
        info = await events.exited(spec.execution_id)
    finally:
        await executor.aclose()
    assert info.stopped
    assert info.exit_signal == signal.SIGKILL


async def test_a_readopted_run_keeps_its_secret_masked_in_result_progress_and_output(
    tmp_path: Path, worker: Worker
) -> None:
    """The server that re-adopts a Celery run has no secret values to mask with: the
    worker masks what it reports (the result and progress message too, not only output)."""
    secret = f"tok-{uuid.uuid4().hex[:12]}"
    gate = tmp_path / "gate"
    script = (
        'echo "token $TOK"\n'
        f"while [ ! -e {gate} ]; do sleep 0.05; done\n"  # until the first server is gone
        'printf \'{"progress": 0.5, "message": "using %s"}\\n\' "$TOK"'
        ' > "/proc/self/fd/$JOBHOST_CONTROL_FD"\n'
        'printf \'{"token": "%s", "said": ["token %s"]}\' "$TOK" "$TOK" > "$JOBHOST_RESULT_PATH"\n'
        "exit 2\n"
    )
    spec = spec_for(tmp_path, uuid.uuid4().hex, script, worker.queue)
    env = {**spec.env, "TOK": secret, "JOBHOST_RESULT_PATH": spec.result_path}
    spec = dataclasses.replace(spec, env=env, secrets=(secret,))
    await start_then_leave(tmp_path, spec)  # the run goes on on its worker
    events = contract.Recorder()
    second = CeleryExecutor(events, settings(tmp_path))
    try:
        assert await second.adopt(record(spec))
        assert second.adopted_secrets(spec.execution_id) == ()  # nothing to mask with here
        gate.touch()
        info = await events.exited(spec.execution_id)
    finally:
        await second.aclose()
    assert info.exit_code == 2
    assert Path(spec.log_path).read_text() == "token ***\n"
    assert events.progress[spec.execution_id] == [(0.5, "using ***")]
    # What the supervisor reads back and stores as the run's result.
    assert json.loads(Path(spec.result_path).read_text()) == {
        "token": "***",
        "said": ["token ***"],
    }
    assert secret not in (info.error or "")


async def test_an_exit_its_server_heard_but_never_recorded_is_there_for_the_next_server(
    tmp_path: Path, worker: Worker
) -> None:
    """The saved stream position never passes an exit that is not committed yet
    (``exit_recorded``): a server that dies in between leaves it to the next one."""
    first_events = contract.Recorder()
    first = CeleryExecutor(first_events, settings(tmp_path))
    spec = spec_for(tmp_path, uuid.uuid4().hex, "echo done; exit 6", worker.queue)
    later = spec_for(tmp_path, uuid.uuid4().hex, "echo later", worker.queue)
    await first.start(spec)
    await first_events.exited(spec.execution_id)  # heard; the commit never comes
    # A later entry read by the same reader: the position of the batch before it is saved.
    await first.start(later)
    await first_events.exited(later.execution_id)
    first.exit_recorded(later.execution_id)
    await first.aclose()  # the server dies before committing the first run's end
    info = await adopted_exit(tmp_path, spec)
    assert info.exit_code == 6
    assert Path(spec.log_path).read_text() == "done\n"

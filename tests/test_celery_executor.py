"""The Celery executor against a real Redis and real Celery worker processes.

The executor contract tests of the local executor run here too (imported below, with this
module's ``executor`` fixture), then the engine end to end: success with output and
result, failure, stop, timeout, live follow, and a worker killed mid-run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobhost.config import Settings
from jobhost.executors.celery import CeleryExecutor
from jobhost.models import ExecutionStatus, LaunchSpec
from jobhost.worker import make_app
from tests import test_local_executor as contract
from tests.conftest import require_service
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

pytestmark = pytest.mark.redis

REDIS_DB = 11
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 60


def _redis_up() -> bool:
    try:
        with redis.Redis.from_url(BROKER_URL, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _clean(client: redis.Redis) -> None:
    """Forget JobHost's keys; Celery's queue bindings stay for the running workers."""
    keys = list(client.scan_iter(match="jobhost:*"))
    if keys:
        client.delete(*keys)


class Worker:
    """A ``celery worker`` subprocess in its own session (so it can be killed whole)."""

    def __init__(self, queue: str, log_path: Path, *, cli: bool = False) -> None:
        self.queue = queue
        self.log_path = log_path
        self.node = f"{queue}@{socket.gethostname()}"
        if cli:  # the ``jobhost worker`` verb
            command = [sys.executable, "-m", "jobhost", "worker", "--queue", queue, "-c", "1"]
        else:
            command = [
                *(sys.executable, "-m", "celery", "-A", "jobhost.worker", "worker"),
                *("--pool", "prefork", "--concurrency", "2", "-Q", queue),
                *("-n", self.node),  # the CLI worker is celery@host: names must differ
                *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"),
            ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(os.environ, JOBHOST_CELERY_BROKER_URL=BROKER_URL),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Ask the workers what they consume until one takes our queue (1 s per ask)."""
        app = make_app(BROKER_URL)
        try:
            for _ in range(READY_TIMEOUT_SECONDS):
                if self.process.poll() is not None:
                    break
                replies = app.control.inspect(timeout=1.0).active_queues() or {}
                queues = {queue["name"] for found in replies.values() for queue in found}
                if self.queue in queues:
                    return
        finally:
            app.close()
        self.kill()
        pytest.fail(f"The Celery worker did not start: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (the main process and its pool), as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.kill()


@pytest.fixture(scope="module")
def broker() -> Iterator[redis.Redis]:
    require_service(_redis_up(), f"Redis is not reachable at {BROKER_URL}")
    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    notify = str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])
    yield client
    client.flushdb()
    client.config_set("notify-keyspace-events", notify)
    client.close()


@pytest.fixture(scope="module")
def worker(broker: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    queue = f"jobhost-test-{uuid.uuid4().hex[:8]}"
    started = Worker(queue, tmp_path_factory.mktemp("worker") / "worker.log")
    started.wait_ready()
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def clean_keys(broker: redis.Redis) -> Iterator[None]:
    yield
    _clean(broker)


# -- the executor contract, shared with the local executor ------------------------------


class QueuedExecutor(CeleryExecutor):
    """Routes every spec to the test worker's queue (the contract specs name none)."""

    def __init__(self, recorder: contract.Recorder, queue: str) -> None:
        super().__init__(recorder, Settings(celery_broker_url=BROKER_URL))
        self._queue = queue

    async def start(self, spec: LaunchSpec) -> None:
        await super().start(dataclasses.replace(spec, queue=self._queue))


@pytest.fixture
async def recorder() -> contract.Recorder:
    return contract.Recorder()


@pytest.fixture
async def executor(recorder: contract.Recorder, worker: Worker) -> AsyncIterator[CeleryExecutor]:
    executor = QueuedExecutor(recorder, worker.queue)
    yield executor
    for execution_id in executor.running_ids():
        await executor.stop(execution_id, 0)
    await recorder.until(lambda: not executor.running_ids())
    await executor.aclose()


test_exit_code_cpu_and_memory_come_from_the_kernel = (
    contract.test_exit_code_cpu_and_memory_come_from_the_kernel
)
test_the_child_gets_exactly_the_spec_environment_and_folder = (
    contract.test_the_child_gets_exactly_the_spec_environment_and_folder
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"argv": ["/nonexistent/prog", "x"]},
            "Cannot start /nonexistent/prog: [Errno 2] No such file or directory: "
            "'/nonexistent/prog'",
        ),
        (
            {"cwd": "/nonexistent/folder"},
            "Cannot start /bin/true: [Errno 2] No such file or directory: '/nonexistent/folder'",
        ),
    ],
)
async def test_a_program_that_cannot_start_is_reported_not_raised(
    executor: CeleryExecutor,
    recorder: contract.Recorder,
    tmp_path: Path,
    changes: dict[str, Any],
    expected: str,
) -> None:
    # A copy: the shared test pops from its parameters, which the local run shares.
    await contract.test_a_program_that_cannot_start_is_reported_not_raised(
        executor,
        recorder,
        tmp_path,
        dict(changes),
        expected,
    )


test_a_file_that_is_not_executable_is_reported = (
    contract.test_a_file_that_is_not_executable_is_reported
)
test_stop_sends_sigterm_to_the_group = contract.test_stop_sends_sigterm_to_the_group
test_a_job_that_ignores_sigterm_is_killed_after_the_grace = (
    contract.test_a_job_that_ignores_sigterm_is_killed_after_the_grace
)
test_timeout_stops_the_job_and_says_so = contract.test_timeout_stops_the_job_and_says_so
test_timeout_escalates_to_sigkill_after_the_stop_grace = (
    contract.test_timeout_escalates_to_sigkill_after_the_stop_grace
)
test_grandchildren_left_behind_are_killed_when_the_job_exits = (
    contract.test_grandchildren_left_behind_are_killed_when_the_job_exits
)
test_progress_lines_become_events_and_garbage_is_ignored = (
    contract.test_progress_lines_become_events_and_garbage_is_ignored
)
test_a_capped_job_keeps_head_and_tail_with_a_marker = (
    contract.test_a_capped_job_keeps_head_and_tail_with_a_marker
)
test_a_flooding_job_stays_bounded_on_disk_and_can_be_stopped = (
    contract.test_a_flooding_job_stays_bounded_on_disk_and_can_be_stopped
)


async def test_output_arrives_in_order_and_the_worker_names_its_host(
    executor: CeleryExecutor, recorder: contract.Recorder, tmp_path: Path
) -> None:
    spec = contract.make_spec(tmp_path, "e1", contract.sh("echo one; echo two >&2; echo three"))
    await executor.start(spec)
    info = await recorder.exited("e1")

    assert Path(spec.log_path).read_bytes() == b"one\ntwo\nthree\n"
    assert info.exit_code == 0
    assert info.output_bytes == 14
    assert recorder.outputs["e1"][-1] == 14
    assert recorder.started["e1"][1] == socket.gethostname()
    assert recorder.order[0] == ("started", "e1")
    assert recorder.order[-1] == ("exited", "e1")


# -- the engine, end to end --------------------------------------------------------------

RESULT_JOB = """
import json, os
print("hello from", os.environ["JOBHOST_JOB_ID"], flush=True)
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as fh:
    json.dump({"answer": 42}, fh)
"""
FAIL = "import sys\nprint('bad thing', flush=True)\nsys.exit(3)\n"
SLEEPER = "import os, time\nprint('sleeping', os.getpid(), flush=True)\ntime.sleep(600)\n"


def celery_engine(engine_factory: EngineFactory) -> Any:
    return engine_factory(executor="celery", celery_broker_url=BROKER_URL)


def job_on(apps: Path, name: str, queue: str, script: str, **extra: object) -> str:
    write_job(apps, "Remote", name, {"Name": name, "queue": queue, **extra}, script_text=script)
    return f"Remote/{name}"


async def test_a_job_runs_on_a_worker_with_its_output_and_result(
    apps: Path, engine_factory: EngineFactory, worker: Worker
) -> None:
    job_id = job_on(apps, "Hello", worker.queue, RESULT_JOB)
    async with celery_engine(engine_factory) as engine:
        final = await engine.wait((await engine.start(job_id)).id)
        output = (await engine.read_output(final.id)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    assert final.exit_code == 0
    assert final.result == {"answer": 42}
    assert final.host == socket.gethostname()
    assert final.cpu_seconds is not None
    assert output == "hello from Remote/Hello\n"
    assert final.output_bytes == len(output)


async def test_a_failing_job_records_its_exit_code(
    apps: Path, engine_factory: EngineFactory, worker: Worker
) -> None:
    job_id = job_on(apps, "Fail", worker.queue, FAIL)
    async with celery_engine(engine_factory) as engine:
        final = await engine.wait((await engine.start(job_id)).id)
        output = (await engine.read_output(final.id)).data.decode()
    assert final.status is ExecutionStatus.FAILED
    assert final.exit_code == 3
    assert output == "bad thing\n"


async def test_a_long_job_is_stopped_and_its_process_group_is_gone(
    apps: Path, engine_factory: EngineFactory, worker: Worker
) -> None:
    job_id = job_on(apps, "Sleeper", worker.queue, SLEEPER)
    async with celery_engine(engine_factory) as engine:
        started = await engine.start(job_id)
        async for chunk in engine.follow(started.id):  # live output: the job is running
            assert chunk.data.startswith(b"sleeping")
            break
        running = await engine.status(started.id)
        assert running.status is ExecutionStatus.RUNNING
        assert running.pid is not None
        await engine.stop(execution_id=started.id)
        final = await engine.wait(started.id)
    assert final.status is ExecutionStatus.STOPPED
    assert final.exit_signal == signal.SIGTERM
    await contract.wait_gone(running.pid)
    assert not contract.alive(running.pid)


async def test_a_job_past_its_timeout_is_ended_on_the_worker(
    apps: Path, engine_factory: EngineFactory, worker: Worker
) -> None:
    job_id = job_on(apps, "Slow", worker.queue, SLEEPER, timeout_seconds=1)
    async with celery_engine(engine_factory) as engine:
        final = await engine.wait((await engine.start(job_id)).id)
    assert final.status is ExecutionStatus.TIMED_OUT
    assert final.error == "Timed out after 1.0 s"
    assert final.pid is not None
    assert not contract.alive(final.pid)


async def test_live_output_arrives_through_follow(
    apps: Path, engine_factory: EngineFactory, worker: Worker
) -> None:
    script = "import time\nfor n in range(3):\n    print('tick', n, flush=True)\n"
    job_id = job_on(apps, "Ticker", worker.queue, script)
    async with celery_engine(engine_factory) as engine:
        started = await engine.start(job_id)
        chunks = [chunk async for chunk in engine.follow(started.id)]
    assert b"".join(chunk.data for chunk in chunks) == b"tick 0\ntick 1\ntick 2\n"
    assert chunks[-1].done


async def test_a_worker_killed_mid_run_ends_the_run_with_the_heartbeat_error(
    apps: Path,
    engine_factory: EngineFactory,
    broker: redis.Redis,
    tmp_path: Path,
) -> None:
    queue = f"jobhost-doomed-{uuid.uuid4().hex[:8]}"
    doomed = Worker(queue, tmp_path / "doomed.log", cli=True)
    job_pid: int | None = None
    try:
        doomed.wait_ready()
        job_id = job_on(apps, "Orphan", doomed.queue, SLEEPER)
        async with celery_engine(engine_factory) as engine:
            started = await engine.start(job_id)
            async for _chunk in engine.follow(started.id):
                break  # it runs on the doomed worker now
            job_pid = (await engine.status(started.id)).pid
            doomed.kill()
            final = await engine.wait(started.id)
        assert final.status is ExecutionStatus.LOST
        assert final.error == (
            f"Worker {socket.gethostname()} stopped answering (no heartbeat for 10 s)"
        )
    finally:
        doomed.kill()
        # The job itself outlives its worker (its own session); this machine is both.
        if job_pid is not None and contract.alive(job_pid):
            os.killpg(job_pid, signal.SIGKILL)
    assert json.loads(json.dumps(final.to_api()))["status"] == "lost"

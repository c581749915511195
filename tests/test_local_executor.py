"""LocalExecutor against real processes: output, exit accounting, stop, timeout, cleanup."""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobhost.errors import Conflict
from jobhost.execution.cgroups import Isolation, Mode
from jobhost.execution.output import stderr_spans
from jobhost.executors.local import LocalExecutor
from jobhost.models import Execution, ExecutionStatus, ExitInfo, LaunchSpec, Trigger


class Recorder:
    """ExecutionEvents that remembers everything and lets a test await it."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[int | None, str]] = {}
        self.outputs: dict[str, list[int]] = defaultdict(list)
        self.progress: dict[str, list[tuple[float | None, str | None]]] = defaultdict(list)
        self.exits: dict[str, ExitInfo] = {}
        self.order: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def _notify(self, kind: str, execution_id: str) -> None:
        self.order.append((kind, execution_id))
        self._changed.set()

    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        self.started[execution_id] = (pid, host)
        self._notify("started", execution_id)

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        self.outputs[execution_id].append(total_bytes)
        self._notify("output", execution_id)

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        self.progress[execution_id].append((fraction, message))
        self._notify("progress", execution_id)

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        assert execution_id not in self.exits, "on_exited must come once"
        self.exits[execution_id] = info
        self._notify("exited", execution_id)

    async def until(self, predicate: Any) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def exited(self, execution_id: str) -> ExitInfo:
        await self.until(lambda: execution_id in self.exits)
        return self.exits[execution_id]

    async def pid(self, execution_id: str) -> int:
        await self.until(lambda: execution_id in self.started)
        pid = self.started[execution_id][0]
        assert pid is not None
        return pid


def make_spec(tmp_path: Path, execution_id: str, argv: list[str], **changes: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "execution_id": execution_id,
        "job_id": "Tests/Job",
        "argv": argv,
        "cwd": str(tmp_path),
        "env": {"PATH": os.environ["PATH"], "LANG": "C"},
        "log_path": str(tmp_path / "logs" / f"{execution_id}.log"),
        "result_path": str(tmp_path / f"{execution_id}.json"),
    }
    values.update(changes)
    return LaunchSpec(**values)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def wait_gone(pid: int) -> None:
    """Await the exit of any process (not only our children) through its pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _settle, done)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def executor(recorder: Recorder) -> Any:
    executor = LocalExecutor(recorder, host="test-host")
    yield executor
    for execution_id in executor.running_ids():
        await executor.stop(execution_id, 0)
    await recorder.until(lambda: not executor.running_ids())
    await executor.aclose()


@pytest.mark.parametrize("isolation", ["auto", "rlimits"])  # rlimits: through the trampoline
async def test_output_of_stdout_and_stderr_is_captured_with_stderr_marked(
    recorder: Recorder, tmp_path: Path, isolation: Mode
) -> None:
    executor = LocalExecutor(recorder, host="test-host", isolation=Isolation.detect(isolation))
    spec = make_spec(tmp_path, "e1", sh("echo one; echo two >&2; echo three"))
    await executor.start(spec)
    info = await recorder.exited("e1")
    await executor.aclose()

    # One log, each stream in its order; which bytes came from stderr is on the side.
    log = Path(spec.log_path).read_bytes()
    assert sorted(log.splitlines()) == [b"one", b"three", b"two"]
    assert log.index(b"one") < log.index(b"three")
    start = log.index(b"two\n")
    assert stderr_spans(spec.log_path, 0, len(log)) == [(start, start + 4)]
    assert info.exit_code == 0
    assert info.exit_signal is None
    assert info.output_bytes == 14
    assert not info.stopped
    assert not info.timed_out
    assert info.error is None
    assert recorder.outputs["e1"][-1] == 14
    assert recorder.started["e1"][1] == "test-host"
    assert recorder.order[0] == ("started", "e1")
    assert recorder.order[-1] == ("exited", "e1")


async def test_host_defaults_to_the_machine_name(recorder: Recorder, tmp_path: Path) -> None:
    executor = LocalExecutor(recorder)
    await executor.start(make_spec(tmp_path, "e1", ["/bin/true"]))
    await recorder.exited("e1")
    assert recorder.started["e1"][1] == socket.gethostname()
    await executor.aclose()


async def test_exit_code_cpu_and_memory_come_from_the_kernel(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    script = "import sys\nblock = bytearray(50 * 1024 * 1024)\nsum(range(3_000_000))\nsys.exit(3)"
    await executor.start(make_spec(tmp_path, "e1", [sys.executable, "-c", script]))
    info = await recorder.exited("e1")

    assert info.exit_code == 3
    assert info.cpu_seconds is not None
    assert info.cpu_seconds > 0
    assert info.peak_rss_bytes is not None
    assert info.peak_rss_bytes > 50 * 1024 * 1024


async def test_the_child_gets_exactly_the_spec_environment_and_folder(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, "e1", sh("pwd; env | sort"), env={"PATH": "/usr/bin:/bin"})
    await executor.start(spec)
    await recorder.exited("e1")

    lines = Path(spec.log_path).read_text().splitlines()
    assert lines[0] == str(tmp_path)
    names = {line.split("=", 1)[0] for line in lines[1:]}
    # sh itself adds PWD (and SHLVL on some shells); nothing comes from the host.
    assert names - {"PWD", "SHLVL", "_", "OLDPWD"} == {"PATH", "JOBHOST_CONTROL_FD"}


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
    executor: LocalExecutor,
    recorder: Recorder,
    tmp_path: Path,
    changes: dict[str, Any],
    expected: str,
) -> None:
    changes = dict(changes)  # the parameters are shared with other backends' runs
    argv = changes.pop("argv", ["/bin/true"])
    await executor.start(make_spec(tmp_path, "e1", argv, **changes))
    info = await recorder.exited("e1")

    assert info == ExitInfo(exit_code=None, exit_signal=None, error=expected)
    assert "e1" not in recorder.started


async def test_a_run_whose_log_cannot_be_created_never_starts(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = blocker / "e1.log"
    await executor.start(make_spec(tmp_path, "e1", sh(f"touch {marker}"), log_path=str(log)))
    info = await recorder.exited("e1")

    assert info.error == f"Cannot open the output log {log}: [Errno 20] Not a directory: '{log}'"
    assert "e1" not in recorder.started
    assert not marker.exists()


async def test_a_file_that_is_not_executable_is_reported(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n")
    await executor.start(make_spec(tmp_path, "e1", [str(script)]))
    info = await recorder.exited("e1")
    assert info.error == f"Cannot start {script}: [Errno 13] Permission denied: '{script}'"


async def test_starting_a_running_execution_again_is_a_conflict(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    await executor.start(make_spec(tmp_path, "e1", ["sleep", "1000"]))
    with pytest.raises(Conflict, match="Execution 'e1' is already running on test-host"):
        await executor.start(make_spec(tmp_path, "e1", ["sleep", "1000"]))
    await executor.stop("e1", 5)
    assert (await recorder.exited("e1")).stopped


async def test_stop_sends_sigterm_to_the_group(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    await executor.start(make_spec(tmp_path, "e1", ["sleep", "1000"]))
    pid = await recorder.pid("e1")
    await executor.stop("e1", 30)
    await executor.stop("e1", 30)  # idempotent
    info = await recorder.exited("e1")

    assert info.exit_signal == signal.SIGTERM
    assert info.exit_code is None
    assert info.stopped
    assert not info.timed_out
    assert not alive(pid)
    await executor.stop("e1", 30)  # gone: a no-op
    await executor.stop("never-started", 30)


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    # The ignored SIGTERM is inherited by the grandchild sleep as well.
    spec = make_spec(tmp_path, "e1", sh("trap '' TERM; sleep 1000 & echo ready; wait"))
    await executor.start(spec)
    await recorder.until(lambda: recorder.outputs["e1"])
    await executor.stop("e1", 0.3)
    info = await recorder.exited("e1")

    assert info.exit_signal == signal.SIGKILL
    assert info.stopped


async def test_timeout_stops_the_job_and_says_so(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, "e1", ["sleep", "1000"], timeout_seconds=0.2)
    await executor.start(spec)
    info = await recorder.exited("e1")

    assert info.timed_out
    assert not info.stopped
    assert info.exit_signal == signal.SIGTERM


async def test_timeout_escalates_to_sigkill_after_the_stop_grace(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    spec = make_spec(
        tmp_path,
        "e1",
        sh("trap '' TERM; while :; do sleep 1; done"),
        timeout_seconds=0.2,
        stop_grace_seconds=0.2,
    )
    await executor.start(spec)
    info = await recorder.exited("e1")
    assert info.timed_out
    assert info.exit_signal == signal.SIGKILL


async def test_grandchildren_left_behind_are_killed_when_the_job_exits(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    # The grandchildren keep the output pipe open: the exit must not wait for them.
    spec = make_spec(
        tmp_path, "e1", sh("sleep 1000 & echo $!; sleep 1000 & echo $!; echo bye; exit 4")
    )
    await executor.start(spec)
    info = await recorder.exited("e1")

    assert info.exit_code == 4
    lines = Path(spec.log_path).read_text().splitlines()
    assert lines[-1] == "bye"
    grandchildren = [int(line) for line in lines[:2]]
    for pid in grandchildren:
        await wait_gone(pid)
        assert not alive(pid)


async def test_progress_lines_become_events_and_garbage_is_ignored(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    script = (
        "import os\n"
        "fd = int(os.environ['JOBHOST_CONTROL_FD'])\n"
        "os.write(fd, b'not json\\n')\n"
        'os.write(fd, b\'{"progress": 0.5, "message": "half"}\\n\')\n'
        "os.write(fd, b'[1, 2]\\n')\n"
        "os.write(fd, b'{\"progress\": \"x\"' + b' ' * 10000 + b'}\\n')\n"
        'os.write(fd, b\'{"progress": 7}\\n{"message": "no fraction"}\\n\')\n'
        "os.write(fd, b'{\"progress\": 0.25')\n"  # cut short: never completed
    )
    await executor.start(make_spec(tmp_path, "e1", [sys.executable, "-c", script]))
    await recorder.exited("e1")

    assert recorder.progress["e1"] == [(0.5, "half"), (1.0, None), (None, "no fraction")]


async def test_a_capped_job_keeps_head_and_tail_with_a_marker(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    script = "import sys\nfor i in range(100_000):\n    sys.stdout.write(f'{i:07d}\\n')\n"
    spec = make_spec(tmp_path, "e1", [sys.executable, "-c", script], max_output_bytes=64 * 1024)
    await executor.start(spec)
    info = await recorder.exited("e1")

    produced = b"".join(f"{i:07d}\n".encode() for i in range(100_000))
    assert info.output_bytes == len(produced)
    stored = Path(spec.log_path).read_bytes()
    assert stored[: 32 * 1024] == produced[: 32 * 1024]
    assert stored[32 * 1024 :].startswith(b"\n[jobhost: ")
    count, _, tail = stored[32 * 1024 + 11 :].partition(b" bytes of output dropped]\n")
    assert tail == produced[-len(tail) :]
    assert 32 * 1024 + int(count) + len(tail) == len(produced)
    assert len(stored) < 64 * 1024 + 100


async def test_a_flooding_job_stays_bounded_on_disk_and_can_be_stopped(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    cap = 1024 * 1024
    spec = make_spec(tmp_path, "e1", ["yes"], max_output_bytes=cap)
    await executor.start(spec)
    await executor.start(make_spec(tmp_path, "e2", sh("echo still served")))
    await recorder.exited("e2")  # another job is served while the flood goes on
    await recorder.until(lambda: (recorder.outputs["e1"] or [0])[-1] > 30 * cap)
    on_disk = sum(os.path.getsize(name) for name in glob.glob(spec.log_path + "*"))
    assert on_disk <= cap + 4096
    await executor.stop("e1", 5)
    info = await recorder.exited("e1")

    assert info.stopped
    stored = Path(spec.log_path).read_bytes()
    assert len(stored) <= cap + 100
    assert stored.count(b"bytes of output dropped]") == 1
    assert glob.glob(spec.log_path + ".*") == [spec.log_path + ".index"]


async def test_aclose_leaves_running_processes_alone(recorder: Recorder, tmp_path: Path) -> None:
    executor = LocalExecutor(recorder)
    await executor.start(make_spec(tmp_path, "e1", ["sleep", "1000"]))
    pid = await recorder.pid("e1")
    await executor.aclose()

    assert alive(pid)
    assert executor.running_ids() == []
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def running_execution(pid: int, started_at: datetime) -> Execution:
    return Execution(
        id="orphan",
        job_id="Tests/Job",
        status=ExecutionStatus.RUNNING,
        trigger=Trigger.USER,
        user="alice",
        pid=pid,
        started_at=started_at,
    )


async def test_terminate_orphan_kills_the_recorded_group(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    leftover = subprocess.Popen(
        sh("sleep 1000 & wait"), start_new_session=True, stdout=subprocess.DEVNULL
    )
    started_at = datetime.now(UTC)
    try:
        assert await executor.terminate_orphan(running_execution(leftover.pid, started_at))
        assert leftover.wait() == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


async def test_terminate_orphan_never_kills_a_recycled_pid(executor: LocalExecutor) -> None:
    unrelated = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        # The run was recorded an hour before this process was created: not ours.
        recorded = running_execution(unrelated.pid, datetime.now(UTC) - timedelta(hours=1))
        assert not await executor.terminate_orphan(recorded)
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


async def test_terminate_orphan_of_a_vanished_process_is_false(executor: LocalExecutor) -> None:
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    assert not await executor.terminate_orphan(running_execution(gone.pid, datetime.now(UTC)))
    no_pid = running_execution(1, datetime.now(UTC)).evolve(pid=None)
    assert not await executor.terminate_orphan(no_pid)


@pytest.mark.slow
async def test_a_thousand_concurrent_jobs_run_and_stop(
    executor: LocalExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    ids = [f"e{n}" for n in range(1000)]
    for execution_id in ids:
        await executor.start(make_spec(tmp_path, execution_id, ["sleep", "30"]))
    await recorder.until(lambda: len(recorder.started) == len(ids))
    assert len(executor.running_ids()) == 1000
    await asyncio.sleep(0)  # the loop still answers

    pids = [recorder.started[execution_id][0] for execution_id in ids]
    for execution_id in ids:
        await executor.stop(execution_id, 10)
    await recorder.until(lambda: len(recorder.exits) == len(ids))

    assert all(recorder.exits[i].exit_signal == signal.SIGTERM for i in ids)
    assert all(recorder.exits[i].stopped for i in ids)
    assert [pid for pid in pids if pid is not None and alive(pid)] == []
    assert executor.running_ids() == []


async def test_runs_one_after_another_each_get_their_own_log_and_leave_no_other_file(
    recorder: Recorder, tmp_path: Path
) -> None:
    """Logs are made ahead of the next start, in the folder of the last one: a run whose
    log already exists gets it emptied, a run in another folder gets its log there, and
    closing the executor leaves only the runs' logs."""
    executor = LocalExecutor(recorder, host="test-host")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "e3.log").write_text("an earlier run's output\n")
    other = tmp_path / "other"
    other.mkdir()
    for n in range(1, 6):
        log_path = other / f"e{n}.log" if n == 4 else logs / f"e{n}.log"
        spec = make_spec(tmp_path, f"e{n}", sh(f"echo run {n}"), log_path=str(log_path))
        await executor.start(spec)
        assert (await recorder.exited(f"e{n}")).exit_code == 0
        assert log_path.read_text() == f"run {n}\n"
    await executor.aclose()
    assert sorted(os.listdir(logs)) == ["e1.log", "e2.log", "e3.log", "e5.log"]
    assert os.listdir(other) == ["e4.log"]
    assert (logs / "e1.log").stat().st_mode & 0o777 == 0o640

"""The runner: job processes outlive the server that started them and are re-adopted.

A previous "server" is a real process (``PREVIOUS``: a ``RunnerExecutor`` that starts one
run and waits) killed with SIGKILL or SIGTERM; a new ``RunnerExecutor`` in the test then
adopts the run and must hear all of it: output, exit, accounting, stop and timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobhost.executors.runner import RunnerExecutor
from jobhost.models import (
    Execution,
    ExecutionStatus,
    ExitInfo,
    ResourceLimits,
    RunAs,
    Trigger,
)
from jobhost.runner.protocol import (
    PROTOCOL,
    LineBuffer,
    exit_from_wire,
    exit_to_wire,
    runner_dir,
    spec_from_wire,
    spec_to_wire,
)
from tests.test_local_executor import Recorder, alive, make_spec, sh, wait_gone

PREVIOUS = """
import asyncio, json, signal, sys
from jobhost.executors.runner import RunnerExecutor
from jobhost.models import LaunchSpec

class Events:
    def __init__(self):
        self.output = asyncio.Event()
        self.pid = None
    def on_started(self, execution_id, pid, host):
        self.pid = pid
    def on_output(self, execution_id, total):
        self.output.set()
    def on_progress(self, execution_id, fraction, message):
        pass
    def on_exited(self, execution_id, info):
        pass

async def main():
    events = Events()
    executor = RunnerExecutor(events, sys.argv[1])
    await executor.start(LaunchSpec(**json.loads(sys.argv[2])))
    await events.output.wait()  # running, and past its first line
    print(json.dumps({"pid": events.pid}), flush=True)
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, closed.set)
    await closed.wait()
    await executor.aclose()  # a server that stops: the run must go on

asyncio.run(main())
"""

LINES = 40
COUNTER = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.1; done"


def expected_lines(count: int = LINES) -> str:
    return "".join(f"line {i}\n" for i in range(1, count + 1))


def record(execution_id: str, pid: int | None = None) -> Execution:
    return Execution(
        id=execution_id,
        job_id="Tests/Job",
        status=ExecutionStatus.RUNNING,
        trigger=Trigger.USER,
        user=None,
        pid=pid,
    )


class Previous:
    """A real process that started one run through the runner of ``data_dir``."""

    def __init__(self, data_dir: Path, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PREVIOUS, str(data_dir), json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the previous server died before its run printed"
        self.pid: int = json.loads(line)["pid"]

    def end(self, signum: int) -> None:
        self.process.send_signal(signum)
        assert self.process.wait(timeout=60) in (0, -signum)
        assert self.process.stdout is not None
        self.process.stdout.close()


def spec_dict(tmp_path: Path, execution_id: str, argv: list[str], **changes: Any) -> dict[str, Any]:
    spec = make_spec(tmp_path, execution_id, argv, **changes)
    return dataclasses.asdict(spec)  # nested values (limits, run_as) as plain dicts too


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    kill_runner(path)


def kill_runner(data_dir: Path, *, jobs: bool = True) -> None:
    """SIGKILL the test's runner, and (``jobs``) every job it still has; return once the
    runner is dead (a dying runner can still accept a connection on its socket, which
    then breaks: the next start would meet that, not a new runner)."""
    killed: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "jobhost.runner" in cmdline and str(runner_dir(data_dir)) in cmdline:
            if jobs:
                for child in process.children(recursive=True):
                    child.kill()
            process.kill()
            killed.append(process)
    deadline = time.monotonic() + 30
    while killed and time.monotonic() < deadline:
        try:
            if killed[0].status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.01)  # a SIGKILLed process has no event to await here
                continue
        except psutil.NoSuchProcess:
            pass
        killed.pop(0)


@pytest.fixture
async def adopter(data_dir: Path) -> AsyncIterator[tuple[RunnerExecutor, Recorder]]:
    recorder = Recorder()
    executor = RunnerExecutor(recorder, data_dir)
    yield executor, recorder
    await executor.aclose()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
async def test_a_run_outlives_its_server_and_the_next_one_hears_all_of_it(
    tmp_path: Path,
    data_dir: Path,
    adopter: tuple[RunnerExecutor, Recorder],
    signum: int,
) -> None:
    previous = Previous(data_dir, spec_dict(tmp_path, "run1", sh(COUNTER)))
    previous.end(signum)
    assert alive(previous.pid)  # the job did not die with its server
    executor, recorder = adopter
    assert await executor.adopt(record("run1", previous.pid))
    info = await recorder.exited("run1")
    log = (tmp_path / "logs" / "run1.log").read_text()
    assert log == expected_lines()  # every line once, in order, none lost while nobody listened
    assert (info.exit_code, info.exit_signal, info.error) == (0, None, None)
    assert info.output_bytes == len(expected_lines())
    assert info.cpu_seconds is not None
    assert info.peak_rss_bytes
    totals = recorder.outputs["run1"]
    assert totals == sorted(totals)
    assert all(0 < total <= info.output_bytes for total in totals)


async def test_a_run_that_ended_while_no_server_was_up_is_reported_on_adoption(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    script = "echo first; read line < $0.go; echo last; exit 3"
    go = tmp_path / "gate"
    os.mkfifo(f"{go}.go")
    previous = Previous(data_dir, spec_dict(tmp_path, "run2", ["/bin/sh", "-c", script, str(go)]))
    previous.end(signal.SIGKILL)
    with open(f"{go}.go", "w") as gate:  # let it finish now, with no server anywhere
        gate.write("go\n")
    await wait_gone(previous.pid)
    executor, recorder = adopter
    assert await executor.adopt(record("run2", previous.pid))
    info = await recorder.exited("run2")
    assert info.exit_code == 3
    assert (tmp_path / "logs" / "run2.log").read_text() == "first\nlast\n"
    # Recorded and acknowledged (as the supervisor does once its commit is done): a second
    # adoption finds nothing left. A request on the same connection orders it after the ack.
    executor.exit_recorded("run2")
    await executor.unclaimed()
    second = RunnerExecutor(Recorder(), data_dir)
    try:
        assert not await second.adopt(record("run2"))
    finally:
        await second.aclose()


# A previous server that hears a run's exit and dies before recording it.
HEARD_THE_EXIT = """
import asyncio, json, sys
from jobhost.executors.runner import RunnerExecutor
from jobhost.models import LaunchSpec

class Events:
    def __init__(self):
        self.exited = asyncio.Event()
    def on_started(self, execution_id, pid, host):
        pass
    def on_output(self, execution_id, total):
        pass
    def on_progress(self, execution_id, fraction, message):
        pass
    def on_exited(self, execution_id, info):
        self.exited.set()  # and its commit never happens: the process is killed now

async def main():
    events = Events()
    executor = RunnerExecutor(events, sys.argv[1])
    await executor.start(LaunchSpec(**json.loads(sys.argv[2])))
    await events.exited.wait()
    print("heard", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_an_exit_its_server_heard_but_never_recorded_is_adopted_by_the_next(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    spec = spec_dict(tmp_path, "run8", sh("echo done; exit 5"))
    previous = subprocess.Popen(
        [sys.executable, "-c", HEARD_THE_EXIT, str(data_dir), json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert previous.stdout is not None
    assert previous.stdout.readline() == "heard\n"
    previous.kill()  # between hearing the exit and committing it
    previous.wait()
    previous.stdout.close()
    executor, recorder = adopter
    assert await executor.adopt(record("run8"))  # the runner kept the exit: not acknowledged
    info = await recorder.exited("run8")
    assert info.exit_code == 5
    assert (tmp_path / "logs" / "run8.log").read_text() == "done\n"


async def test_a_stop_after_adoption_ends_the_whole_process_group(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    script = "sleep 600 & echo $!; while true; do echo tick; sleep 0.2; done"
    previous = Previous(data_dir, spec_dict(tmp_path, "run3", sh(script)))
    previous.end(signal.SIGKILL)
    grandchild = int((tmp_path / "logs" / "run3.log").read_text().split()[0])
    assert alive(grandchild)
    executor, recorder = adopter
    assert await executor.adopt(record("run3", previous.pid))
    await executor.stop("run3", 5)
    info = await recorder.exited("run3")
    assert info.stopped
    assert info.exit_signal == signal.SIGTERM
    await wait_gone(grandchild)
    assert not alive(previous.pid)
    assert not alive(grandchild)


async def test_the_timeout_holds_while_no_server_is_up(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    spec = spec_dict(
        tmp_path, "run4", sh("echo up; sleep 600"), timeout_seconds=1.0, stop_grace_seconds=0.2
    )
    previous = Previous(data_dir, spec)
    previous.end(signal.SIGKILL)
    await wait_gone(previous.pid)  # ended by its timeout with nobody connected
    executor, recorder = adopter
    assert await executor.adopt(record("run4", previous.pid))
    info = await recorder.exited("run4")
    assert info.timed_out
    assert info.exit_signal == signal.SIGTERM


async def test_a_run_no_store_knows_is_listed_and_can_be_ended_without_a_trace(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    previous = Previous(data_dir, spec_dict(tmp_path, "ghost", sh("echo up; sleep 600")))
    previous.end(signal.SIGKILL)
    executor, recorder = adopter
    assert await executor.unclaimed() == ["ghost"]
    assert await executor.terminate_orphan(record("ghost", previous.pid))
    await wait_gone(previous.pid)
    assert await executor.unclaimed() == []  # no exit record is kept for it
    assert not await executor.adopt(record("ghost"))
    assert "ghost" not in recorder.exits


async def test_adopting_what_the_runner_never_had_is_false_and_starts_no_runner(
    data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    executor, _ = adopter
    assert not await executor.adopt(record("unknown"))
    assert await executor.unclaimed() == []
    assert not (runner_dir(data_dir) / "runner.sock").exists()


async def test_runs_of_a_runner_that_dies_end_as_lost_with_the_reason(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    executor, recorder = adopter
    await executor.start(make_spec(tmp_path, "run5", sh("echo up; sleep 600")))
    pid = await recorder.pid("run5")
    kill_runner(data_dir, jobs=False)
    info = await recorder.exited("run5")
    os.killpg(pid, signal.SIGKILL)  # nobody supervises it now
    assert info.lost
    assert info.error is not None
    expected = f"The runner process of {data_dir.resolve()} ended during this run"
    assert info.error.startswith(expected)
    await wait_gone(pid)
    # The next start brings a new runner up.
    await executor.start(make_spec(tmp_path, "run6", sh("echo again")))
    assert (await recorder.exited("run6")).exit_code == 0


async def test_the_runner_socket_is_private_to_its_user(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    executor, recorder = adopter
    await executor.start(make_spec(tmp_path, "run7", sh("true")))
    await recorder.exited("run7")
    socket_path = runner_dir(data_dir) / "runner.sock"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert runner_dir(data_dir).stat().st_mode & 0o077 == 0


async def test_many_runs_through_one_runner_keep_their_own_output(
    tmp_path: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    executor, recorder = adopter
    ids = [f"many{index}" for index in range(30)]
    for index, execution_id in enumerate(ids):
        await executor.start(make_spec(tmp_path, execution_id, sh(f"echo run {index}")))
    for index, execution_id in enumerate(ids):
        assert (await recorder.exited(execution_id)).exit_code == 0
        log = (tmp_path / "logs" / f"{execution_id}.log").read_text()
        assert log == f"run {index}\n"


def test_a_launch_spec_crosses_the_wire_whole_in_either_form(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "wire1",
        ["/bin/echo", "a b", "ü"],
        timeout_seconds=2.5,
        secrets=("hunter2",),
        limits=ResourceLimits(memory_max_bytes=64 << 20, pids_max=5, nice=3),
        run_as=RunAs(user="nobody", group="nogroup", umask=0o077),
        queue="fast",
    )
    for protocol in (PROTOCOL, 1):
        wire = json.loads(json.dumps(spec_to_wire(spec, protocol)))
        assert spec_from_wire(wire) == spec
    plain = make_spec(tmp_path, "wire2", ["true"])
    assert spec_from_wire(json.loads(json.dumps(spec_to_wire(plain)))) == plain


def test_an_exit_crosses_the_wire_with_unknown_apart_from_zero() -> None:
    for info in (
        ExitInfo(exit_code=0, exit_signal=None),
        ExitInfo(exit_code=None, exit_signal=9, cpu_seconds=0.0, peak_rss_bytes=0),
        ExitInfo(1, None, 0.25, 4096, 12, timed_out=True, stopped=True, error="x", lost=True),
    ):
        assert exit_from_wire(json.loads(json.dumps(exit_to_wire(info)))) == info


def test_lines_are_split_across_reads_and_an_overlong_one_is_refused() -> None:
    lines = LineBuffer(limit=10)
    assert lines.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert lines.feed(b":2}\n\n") == [b'{"b":2}', b""]
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        lines.feed(b"x" * 11)


async def test_a_runner_of_an_older_jobhost_gets_the_spec_it_reads(
    tmp_path: Path, data_dir: Path, adopter: tuple[RunnerExecutor, Recorder]
) -> None:
    """A runner that does not say its protocol (started before an upgrade, still serving
    runs) is sent launch specs as objects, which every runner reads."""
    executor, recorder = adopter
    await executor.start(make_spec(tmp_path, "old1", sh("echo first")))
    assert (await recorder.exited("old1")).exit_code == 0
    (runner_dir(data_dir) / "protocol").unlink()
    await executor.aclose()
    later = RunnerExecutor(recorder, data_dir)
    try:
        await later.start(make_spec(tmp_path, "old2", sh("echo second")))
        assert (await recorder.exited("old2")).exit_code == 0
    finally:
        await later.aclose()
    assert (tmp_path / "logs" / "old2.log").read_text() == "second\n"

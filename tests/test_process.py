"""ChildProcess and the fd limit: spawning, reaping with rusage, group signals."""

from __future__ import annotations

import asyncio
import os
import resource
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from jobhost.execution.process import ChildProcess, kill_orphan_group, raise_fd_limit
from jobhost.execution.trampoline import TRAMPOLINE, ExecSetup


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def reaped(child: ChildProcess) -> None:
    """Await the child's exit through its pidfd and reap it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(child.pidfd, _settle, done)
    try:
        await done
    finally:
        loop.remove_reader(child.pidfd)
    assert child.reap() is not None


def wait_for_exit(pid: int) -> bool:
    """Await the exit of a process through its pidfd (it may be a zombie after)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], 60)[0])
    finally:
        os.close(pidfd)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, True)
    data = bytearray()
    while chunk := os.read(fd, 65536):
        data += chunk
    return bytes(data)


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    soft = raise_fd_limit()
    current, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == current
    if hard != resource.RLIM_INFINITY:
        assert current == hard
    assert raise_fd_limit() == soft  # idempotent


async def test_spawn_merges_stderr_and_passes_the_control_pipe(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "print('out', flush=True)\n"
        "print('err', file=sys.stderr, flush=True)\n"
        "os.write(int(os.environ['JOBHOST_CONTROL_FD']), b'{\"progress\": 1}\\n')\n"
    )
    child = ChildProcess.spawn([sys.executable, "-c", script], str(tmp_path), {})
    try:
        await reaped(child)
        assert read_all(child.output_fd) == b"out\nerr\n"
        assert read_all(child.control_fd) == b'{"progress": 1}\n'
        assert child.exit is not None
        assert child.exit.exit_code == 0
    finally:
        child.close()
    child.close()  # idempotent
    assert child.output_fd == child.control_fd == child.pidfd == -1


async def test_the_child_leads_its_own_session_and_reads_nothing(tmp_path: Path) -> None:
    child = ChildProcess.spawn(
        ["/bin/sh", "-c", "ps -o sid= -o pgid= -p $$; cat; echo eof"], str(tmp_path), {}
    )
    try:
        await reaped(child)
        sid, pgid = read_all(child.output_fd).split(b"\n")[0].split()
        assert int(sid) == int(pgid) == child.pid
    finally:
        child.close()


async def test_reap_reports_signal_and_rusage(tmp_path: Path) -> None:
    child = ChildProcess.spawn(["sleep", "1000"], str(tmp_path), {"PATH": os.environ["PATH"]})
    try:
        assert child.reap() is None  # still running
        assert child.signal(signal.SIGTERM)
        await reaped(child)
        assert child.exit is not None
        assert child.exit.exit_code is None
        assert child.exit.exit_signal == signal.SIGTERM
        assert child.exit.peak_rss_bytes > 0
        assert not child.signal(signal.SIGTERM)  # the group is gone: no error
    finally:
        child.close()


def test_spawn_errors_name_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '/no/such/prog'"):
        ChildProcess.spawn(["/no/such/prog"], str(tmp_path), {})
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        ChildProcess.spawn(["/no/such/prog"], str(tmp_path), {})
    assert len(os.listdir("/proc/self/fd")) == fds_before  # no pipe leaked


def test_kill_orphan_group_checks_the_create_time() -> None:
    orphan = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        created = datetime.fromtimestamp(psutil.Process(orphan.pid).create_time(), UTC)
        assert not kill_orphan_group(orphan.pid, created - timedelta(seconds=5))
        assert orphan.poll() is None
        assert kill_orphan_group(orphan.pid, created)
        assert orphan.wait() == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


# ---------------------------------------------------------------- the spawn trampoline


async def test_a_job_spawned_without_a_cgroup_records_its_own_peak_not_the_spawners(
    tmp_path: Path,
) -> None:
    ballast = bytes(range(256)) * (240 * 1024)  # this process is now 60 MB bigger
    child = ChildProcess.spawn(["sleep", "0.1"], str(tmp_path), {"PATH": os.environ["PATH"]})
    assert psutil.Process(child.pid).ppid() == os.getpid()  # our child, for wait4 and pidfd
    await reaped(child)
    child.close()
    assert child.exit is not None
    assert child.exit.exit_code == 0
    # Spawned from this process it would record at least this process's size.
    assert child.exit.peak_rss_bytes < 16 * 1024 * 1024 < len(ballast)


async def test_the_trampoline_applies_limits_and_the_account_before_exec(tmp_path: Path) -> None:
    setup = ExecSetup(rlimits=((resource.RLIMIT_NOFILE, 64),), nice=5, umask=0o077)
    output_r, output_w = os.pipe()
    control_r, control_w = os.pipe()
    script = "ulimit -n; nice; umask; echo $JOBHOST_CONTROL_FD; ls /proc/self/fd | wc -l"
    try:
        with open(os.devnull, "rb") as stdin:
            spawned = TRAMPOLINE.spawn(
                ["sh", "-c", script],
                str(tmp_path),
                {"PATH": os.environ["PATH"], "JOBHOST_CONTROL_FD": "99"},
                (stdin.fileno(), output_w, control_w),
                setup,
            )
    finally:
        os.close(output_w)
        os.close(control_w)
    assert spawned is not None
    assert spawned.wait() == 0
    lines = read_all(output_r).decode().split()
    os.close(output_r)
    os.close(control_r)
    # 0, 1, 2, the control pipe (3) and the one ls reads: nothing else leaked in.
    assert lines == ["64", "5", "0077", "3", "5"]


def test_the_trampoline_reports_spawn_errors_and_survives_its_helpers_death(
    tmp_path: Path,
) -> None:
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '/no/such/prog'"):
        ChildProcess.spawn(["/no/such/prog"], str(tmp_path), {})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        ChildProcess.spawn(["true"], str(tmp_path / "gone"), {"PATH": os.environ["PATH"]})
    with pytest.raises(PermissionError):
        ChildProcess.spawn([str(tmp_path)], str(tmp_path), {})
    helper = TRAMPOLINE.helper_pid
    assert helper is not None
    os.kill(helper, signal.SIGKILL)
    assert wait_for_exit(helper)
    child = ChildProcess.spawn(["true"], str(tmp_path), {"PATH": os.environ["PATH"]})
    assert TRAMPOLINE.helper_pid not in (None, helper)  # a new helper took over
    os.waitpid(child.pid, 0)
    child.detach()

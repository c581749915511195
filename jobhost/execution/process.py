"""One child process: spawned in its own session, signalled by group, reaped with rusage.

This module holds the operating-system side only (pipes, pidfd, ``wait4``, ``killpg``);
``jobhost.executors.local`` wires it into the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import resource
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psutil

from jobhost.execution.trampoline import TRAMPOLINE, ExecSetup, Spawned

if TYPE_CHECKING:
    from jobhost.execution.confinement import Confinement

CONTROL_FD_ENV = "JOBHOST_CONTROL_FD"
EXECUTION_ID_ENV = "JOBHOST_EXECUTION_ID"
CREATE_TIME_SLACK_SECONDS = 1.0


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.

    Each running job holds about four descriptors (output pipe, control pipe, pidfd, log),
    so a thousand jobs need more than the usual soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


@dataclass(frozen=True, slots=True)
class Exit:
    """The kernel's account of a reaped process."""

    exit_code: int | None
    exit_signal: int | None
    cpu_seconds: float
    peak_rss_bytes: int
    error: str | None = None  # why it was killed, when the kernel did it (out of memory)


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group is already gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group still exists but holds only processes we may not signal (a setuid
        # program, or a zombie leader on some kernels): nothing more can be done here.
        return False
    return True


class ChildProcess:
    """A spawned job process that leads its own process group.

    ``output_fd`` is the non-blocking read end of the merged stdout/stderr pipe (of
    stdout alone when spawned with ``split_stderr``: stderr is then ``error_fd``),
    ``control_fd`` that of the progress pipe, ``pidfd`` becomes readable on exit.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes] | Spawned,
        output_fd: int,
        control_fd: int,
        pidfd: int,
        confinement: Confinement | None = None,
        error_fd: int = -1,
    ) -> None:
        self._popen = popen
        self.confinement = confinement
        self.pid = popen.pid
        self.output_fd = output_fd
        self.control_fd = control_fd
        self.pidfd = pidfd
        self.error_fd = error_fd
        self.exit: Exit | None = None

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        *,
        stdin: int | None = None,
        confinement: Confinement | None = None,
        split_stderr: bool = False,
    ) -> ChildProcess:
        """Start ``argv``; raises ``OSError`` (with errno and file name) if it cannot.

        The one spawn function of every job process (in the runner, and on Celery
        workers): per-run isolation (cgroups, rlimits, ``run_as``) is applied here.

        ``stdin`` is an open descriptor of ``/dev/null`` to share between spawns (saves an
        ``open`` per job); by default the child gets a fresh one. ``confinement`` (the
        isolation hook, ``jobhost.execution.confinement``) puts the child in its run's
        cgroup and account, and is asked again at signal and exit time. ``split_stderr``
        gives stderr a pipe of its own (``error_fd``) instead of merging it into stdout's.
        """
        error_r, error_w = os.pipe2(os.O_CLOEXEC) if split_stderr else (-1, -1)
        output_r, output_w = os.pipe2(os.O_CLOEXEC)
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        try:
            child_env = dict(env) if confinement is None else confinement.env(dict(env))
            child_env[CONTROL_FD_ENV] = str(control_w)
            extra = {} if confinement is None else confinement.popen_kwargs()

            def start() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=child_env,
                    stdin=subprocess.DEVNULL if stdin is None else stdin,
                    stdout=output_w,
                    stderr=error_w if split_stderr else subprocess.STDOUT,
                    close_fds=True,
                    pass_fds=(control_w,),
                    start_new_session=True,
                    **extra,
                )

            # Through the trampoline (without a cgroup, or on cgroup v2), so that the run's
            # ru_maxrss is its own and not the spawner's size; directly on cgroup v1.
            popen: subprocess.Popen[bytes] | Spawned | None = None
            setup = ExecSetup() if confinement is None else confinement.exec_setup()
            if setup is not None:
                outputs = (output_w, error_w if split_stderr else output_w, control_w)
                popen = _through_trampoline(argv, cwd, child_env, stdin, outputs, setup)
            if popen is None:
                popen = start() if confinement is None else confinement.spawn(start)
            if confinement is not None:
                confinement.started(popen.pid)
        except BaseException:
            os.close(output_r)
            os.close(control_r)
            if split_stderr:
                os.close(error_r)
            if confinement is not None:
                confinement.abandon()
            raise
        finally:
            # The child holds its own copies; ours would keep the pipes from ever ending.
            os.close(output_w)
            os.close(control_w)
            if split_stderr:
                os.close(error_w)
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:
            popen.kill()
            popen.wait()
            os.close(output_r)
            os.close(control_r)
            if split_stderr:
                os.close(error_r)
            raise
        # One fcntl each (os.set_blocking reads the flags first): a pipe's read end from
        # pipe2(O_CLOEXEC) has no other status flag.
        fcntl.fcntl(output_r, fcntl.F_SETFL, os.O_NONBLOCK)
        fcntl.fcntl(control_r, fcntl.F_SETFL, os.O_NONBLOCK)
        if split_stderr:
            fcntl.fcntl(error_r, fcntl.F_SETFL, os.O_NONBLOCK)
        return cls(popen, output_r, control_r, pidfd, confinement, error_fd=error_r)

    def signal(self, signum: int) -> bool:
        """Signal the whole process group, and every descendant that left it; False when
        the group is gone."""
        if self.confinement is not None:
            self.confinement.signal(signum)
        return signal_group(self.pid, signum)

    def reap(self) -> Exit | None:
        """``wait4`` without blocking: the exit and its rusage, or None if still running.

        Before reaping, whatever is left in the group (grandchildren that did not start
        their own session) is killed: while the leader is an unreaped zombie its pid, and
        so the group ID, cannot be reused by an unrelated process.
        """
        if self.exit is not None:
            return self.exit
        try:
            # Peek first (WNOWAIT keeps the zombie): the group is killed only on exit.
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return None
            signal_group(self.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Someone else reaped it (a foreign SIGCHLD handler): the status is lost.
            self.exit = Exit(None, None, 0.0, 0)
            self._popen.returncode = -1
            if self.confinement is not None:
                self.exit = self.confinement.finish(self.exit)
            return self.exit
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self._popen.returncode = code  # so Popen neither warns nor reaps again
        self.exit = Exit(
            exit_code=code if code >= 0 else None,
            exit_signal=-code if code < 0 else None,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            # Kilobytes on Linux. The kernel counts the spawner's memory at exec time in a
            # child's high-water mark: jobs come from the small spawn trampoline (about
            # 5 MB) for that reason, and the run's cgroup, where there is one, gives the
            # true peak instead.
            peak_rss_bytes=usage.ru_maxrss * 1024,
        )
        if self.confinement is not None:  # descendants killed, cgroup accounting, removed
            self.exit = self.confinement.finish(self.exit)
        return self.exit

    def close(self) -> None:
        """Close our descriptors; idempotent."""
        for name in ("output_fd", "error_fd", "control_fd", "pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def detach(self) -> None:
        """Stop owning a process that keeps running (the engine decided to leave it).

        Popen would warn from its destructor and try to reap it later; the process is left
        on purpose, so its handle is marked settled.
        """
        if self.exit is None:
            self._popen.returncode = 0
        self.close()


def _through_trampoline(
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    stdin: int | None,
    outputs: tuple[int, int, int],
    setup: ExecSetup,
) -> Spawned | None:
    """``outputs``: the child's stdout, stderr (the same pipe when merged) and control."""
    if stdin is not None:
        return TRAMPOLINE.spawn(argv, cwd, env, (stdin, *outputs), setup)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return TRAMPOLINE.spawn(argv, cwd, env, (devnull, *outputs), setup)
    finally:
        os.close(devnull)


def kill_orphan_group(pid: int, started_at: datetime) -> bool:
    """Kill the group a crashed host left behind, if ``pid`` is still that process.

    The process must exist and must not have been created after ``started_at`` (plus a
    second of slack): a later create time means the pid was recycled by someone else.
    """
    try:
        process = psutil.Process(pid)
        created = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if created > started_at.timestamp() + CREATE_TIME_SLACK_SECONDS:
        return False
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if group == pid:
        return signal_group(pid, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)  # it left its group: kill just the recorded process
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EPERM):
            return False
        raise
    return True


def kill_orphan_by_marker(execution_id: str) -> bool:
    """Kill the process group of a run whose pid was never recorded (the host died between
    the spawn and the ``running`` commit), found by the ``JOBHOST_EXECUTION_ID`` in its
    environment. Only session leaders are considered: that is how jobs are started."""
    found = False
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) != process.pid:
                continue
            if process.environ().get(EXECUTION_ID_ENV) != execution_id:
                continue
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or someone else's
        found = signal_group(process.pid, signal.SIGKILL) or found
    return found


MAX_CONTROL_LINE = 4096  # a progress line longer than this is dropped whole
MAX_PROGRESS_MESSAGE = 1000

Progress = tuple[float | None, str | None]


def progress_from(line: bytes) -> Progress | None:
    """``(fraction, message)`` from one control line, or None for anything malformed."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not ({"progress", "message"} & message.keys()):
        return None
    raw = message.get("progress")
    text = message.get("message")
    fraction: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and not math.isnan(raw):
        fraction = min(1.0, max(0.0, float(raw)))
    if text is not None:
        text = str(text)[:MAX_PROGRESS_MESSAGE]
    return fraction, text


class ProgressLines:
    """Splits what a job writes to its control pipe (``JOBHOST_CONTROL_FD``) into progress
    reports, one JSON object a line; memory stays under ``MAX_CONTROL_LINE``, and an
    over-long line is dropped whole rather than misread."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line

    def feed(self, data: bytes) -> list[Progress]:
        reports = []
        buffer = self._buffer
        buffer += data
        while (newline := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if self._skipping:
                self._skipping = False
                continue
            report = progress_from(line)
            if report is not None:
                reports.append(report)
        if len(buffer) > MAX_CONTROL_LINE:
            buffer.clear()
            self._skipping = True
        return reports

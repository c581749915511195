"""Spawning through a small helper process, so a run's peak memory is its own.

Without a cgroup, a run's peak memory is the kernel's ``ru_maxrss``, which counts the
address space the process had when it called ``exec``: the spawner's (the runner's
20-40 MB for a ``sleep``). ``jobhost/execution/spawn_helper.py`` is a small process (about
5 MB) that creates each job with ``clone(CLONE_PARENT)``: the job is still a child of the
process that asked (pidfd, ``wait4`` and rusage work as before), but starts from the
helper's small address space. With a cgroup v2 the child joins the run's cgroup before
its ``exec`` (and the cgroup's ``memory.peak`` is read where the kernel has it); with
cgroup v1 jobs are spawned directly, from a thread that joined the run's cgroups, and the
peak is the cgroup's ``memory.max_usage_in_bytes``.

Helpers are started on first use, one per concurrent spawn (two in the runner), and again
after a fork or if one died; a spawn that cannot use one (an architecture without a known
``clone`` number, a helper that will not start) falls back to ``subprocess``.
"""

from __future__ import annotations

import array
import contextlib
import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobhost.execution.spawn_helper import HEADER, SYS_CLONE

log = logging.getLogger(__name__)

HELPER = str(Path(__file__).with_name("spawn_helper.py"))


@dataclass(frozen=True, slots=True)
class ExecSetup:
    """What the child does between its creation and its ``exec`` (see ``Confinement``)."""

    rlimits: tuple[tuple[int, int], ...] = ()
    nice: int | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    umask: int | None = None
    cgroup_procs: str | None = None  # cgroup v2: the run's cgroup.procs, joined first


class Spawned:
    """A job process made by the helper: what ``ChildProcess`` needs of a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class _Helper:
    """One helper process and our end of its socket; used by one spawn at a time."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", HELPER, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env={},
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()  # a forked copy of this process must not share it

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def request(self, body: bytes, fds: tuple[int, int, int, int]) -> dict[str, Any]:
        self.sock.sendmsg(
            [HEADER.pack(len(body)), body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _ints(fds))]
        )
        return _read_reply(self.sock)

    def close(self) -> None:
        self.sock.close()
        if self.owner == os.getpid():
            self.process.kill()
            self.process.wait()


class Trampoline:
    """The process's helpers; ``spawn`` is thread-safe.

    A spawn takes an idle helper (or starts one) and gives it back after: concurrent
    spawns (the runner's two spawner threads) each have a helper of their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Helper] = []
        self.usable = os.uname().machine in SYS_CLONE

    @property
    def helper_pid(self) -> int | None:
        """The pid of an idle helper process, if one is running."""
        with self._lock:
            alive = [helper for helper in self._idle if helper.usable()]
        return alive[-1].process.pid if alive else None

    def spawn(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        fds: tuple[int, int, int, int],
        setup: ExecSetup,
    ) -> Spawned | None:
        """Start ``argv`` with ``fds`` as stdin, stdout, stderr and the control pipe.

        ``OSError`` as ``subprocess`` raises it when the program cannot start; None when
        the helper is not available (the caller spawns the usual way).
        """
        helper = self._take()
        if helper is None:
            return None
        request = {
            "argv": list(argv),
            "cwd": cwd,
            "env": dict(env),
            "rlimits": [list(pair) for pair in setup.rlimits],
            "nice": setup.nice,
            "account": None
            if setup.uid is None
            else {"uid": setup.uid, "gid": setup.gid, "groups": list(setup.groups)},
            "umask": setup.umask,
            "cgroup": setup.cgroup_procs,
        }
        try:
            reply = helper.request(marshal.dumps(request), fds)
        except OSError:
            helper.close()  # it died: the next spawn starts a new one
            raise
        with self._lock:
            self._idle.append(helper)
        pid = reply.get("pid")
        errno = reply.get("errno")
        if errno is None and isinstance(pid, int):
            return Spawned(pid)
        if isinstance(pid, int):
            Spawned(pid).wait()  # the failed child is ours to reap
        step = reply.get("step")
        if step == "exec":
            raise OSError(errno, os.strerror(errno or 0), argv[0])
        if step == "chdir":
            raise OSError(errno, os.strerror(errno or 0), cwd)
        raise OSError(errno, f"{os.strerror(errno or 0)} (while setting up the job: {step})")

    def _take(self) -> _Helper | None:
        """An idle, living helper of this process, or a new one; None if none can start."""
        if not self.usable:
            return None
        with self._lock:
            while self._idle:
                helper = self._idle.pop()
                if helper.usable():
                    return helper
                helper.close()
        try:
            return _Helper()
        except OSError as exc:
            log.warning("spawn helper unavailable, spawning directly: %s", exc)
            self.usable = False
            return None


def _ints(values: tuple[int, ...]) -> bytes:
    return array.array("i", values).tobytes()


def _read_reply(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while len(data) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(data))
        if not chunk:
            raise ConnectionResetError("the spawn helper ended")
        data += chunk
    (length,) = HEADER.unpack(data)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionResetError("the spawn helper ended")
        body += chunk
    reply: dict[str, Any] = marshal.loads(body)  # noqa: S302 - from our own helper
    return reply


TRAMPOLINE = Trampoline()

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

One helper per process, started on first use and again after a fork or if it died; a
spawn that cannot use it (an architecture without a known ``clone`` number, a helper
that will not start) falls back to ``subprocess``. Spawns through it are serialised (one
request at a time), which is what the kernel does with concurrent forks of one process
anyway.
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


class Trampoline:
    """The process's helper; ``spawn`` is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helper: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._owner = 0  # the pid that started the helper (a forked copy starts its own)
        self.usable = os.uname().machine in SYS_CLONE

    @property
    def helper_pid(self) -> int | None:
        """The helper process's pid while one is running (started on first use)."""
        helper = self._helper
        return None if helper is None or helper.poll() is not None else helper.pid

    def spawn(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        fds: tuple[int, int, int],
        setup: ExecSetup,
    ) -> Spawned | None:
        """Start ``argv`` with ``fds`` as stdin, stdout+stderr and the control pipe.

        ``OSError`` as ``subprocess`` raises it when the program cannot start; None when
        the helper is not available (the caller spawns the usual way).
        """
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
        body = marshal.dumps(request)
        with self._lock:
            sock = self._connected()
            if sock is None:
                return None
            try:
                sock.sendmsg(
                    [HEADER.pack(len(body)), body],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _ints(fds))],
                )
                reply = _read_reply(sock)
            except OSError:
                self._close()  # the helper died: the next spawn starts a new one
                raise
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

    def _connected(self) -> socket.socket | None:
        if not self.usable:
            return None
        helper = self._helper
        if self._sock is not None and self._owner == os.getpid():
            if helper is not None and helper.poll() is None:
                return self._sock
            self._close()
        elif self._sock is not None:  # a forked copy of the process: not ours to use
            self._sock.close()
            self._sock, self._helper = None, None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._helper = subprocess.Popen(
                [sys.executable, "-I", "-S", HELPER, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env={},
            )
        except OSError as exc:
            ours.close()
            log.warning("spawn helper unavailable, spawning directly: %s", exc)
            self.usable = False
            return None
        finally:
            theirs.close()
        self._sock, self._owner = ours, os.getpid()
        return ours

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        helper = self._helper
        if helper is not None:
            helper.kill()
            helper.wait()
        self._sock, self._helper = None, None


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

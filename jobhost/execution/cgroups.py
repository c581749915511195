"""A control group per run: limits, true accounting, and every descendant found.

``Isolation.detect()`` looks once, at start, for what this machine offers:

- **cgroup v2** (the unified hierarchy with the ``memory``, ``pids`` and ``cpu`` controllers):
  runs go to ``<the server's cgroup>/jobhost/<execution id>``. The server's own cgroup must be
  delegated to it (systemd ``Delegate=yes``); when it holds other processes the server moves
  itself into a ``server`` leaf so the controllers can be enabled below.
- **cgroup v1** (separate ``memory``, ``pids``, ``cpu``, ``cpuacct`` hierarchies writable by
  us): one ``jobhost/<execution id>`` directory per hierarchy, under the server's own.
- else **rlimits**: ``memory_max`` becomes ``RLIMIT_AS``, ``pids_max`` ``RLIMIT_NPROC`` (per
  user, so meaningful with ``run_as``), ``cpu_quota`` and ``cpu_weight`` are not enforced, and
  descendants are found by the ``JOBHOST_EXECUTION_ID`` in their environment.

A process enters its run's cgroup before it runs a single instruction of the job: on v1 the
spawning thread joins the cgroup for the length of the spawn and leaves it right after
(membership is per thread there, and a child inherits its parent thread's); on v2 the
child writes itself into ``cgroup.procs`` between fork and exec. ``nice`` and
``open_files`` are set between fork and exec too (``jobhost.execution.confinement``).

At exit the whole cgroup is killed (grandchildren that called ``setsid`` included), peak
memory (``memory.max_usage_in_bytes`` / ``memory.peak``), CPU time and OOM kills are read,
and the directory is removed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from jobhost.models import ResourceLimits

log = logging.getLogger(__name__)

T = TypeVar("T")
_spawner = threading.local()  # ``stuck``: this thread could not leave a run's cgroup
Kind = Literal["cgroup2", "cgroup1", "rlimits"]
Mode = Literal["auto", "cgroup", "rlimits"]
ROOT = "/sys/fs/cgroup"
ISOLATION_ENV = "JOBHOST_ISOLATION"  # the settings' ``isolation``, for a runner process
ISOLATION_NAME = "isolation"  # the runner's description of itself, in its folder
GROUP = "jobhost"  # the folder, under the server's cgroup, that holds one cgroup per run
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
KILL_ROUNDS = 200  # a fork bomb bounded by pids_max empties within a few rounds
REMOVE_SECONDS = 5.0  # how long a cgroup whose last members are dying is retried
STALE_SECONDS = 60.0  # an empty run cgroup older than this, found at start, is left over


@dataclass(frozen=True, slots=True)
class Usage:
    """What a run's cgroup counted: peak bytes, CPU seconds, OOM kills (None: not known)."""

    peak_bytes: int | None
    cpu_seconds: float | None
    oom_kills: int


def _read(path: str) -> str:
    # os.read rather than open(): a text file object costs four more system calls (fstat,
    # ioctl, two lseeks), and a run's end reads several of these files.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _read_small(path: str) -> str:
    """A file of a few lines written in one go by the kernel (a value, ``oom_control``):
    one read returns all of it, so no second read is made to see its end."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


_homes_lock = threading.Lock()
_home_tasks: dict[str, int] = {}  # a v1 cgroup of this process → its ``tasks``, kept open


def _home_fd(home: str) -> int:
    """The open ``tasks`` file a spawner thread writes itself back to (one write per move,
    instead of an open, a write and a close)."""
    fd = _home_tasks.get(home)
    if fd is None:
        with _homes_lock:
            fd = _home_tasks.get(home)
            if fd is None:
                fd = os.open(home + "/tasks", os.O_WRONLY | os.O_CLOEXEC)
                _home_tasks[home] = fd
    return fd


def _own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller → path ("" for the v2 line)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _mounts() -> dict[str, str]:
    """cgroup mounts: each v1 controller (and "" for cgroup2) → mount point."""
    found: dict[str, str] = {}
    for line in _read("/proc/self/mounts").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            found.setdefault("", fields[1])
        elif fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in V1_CONTROLLERS:
                    found.setdefault(option, fields[1])
    return found


class Isolation:
    """What this host offers (see the module docstring); makes one ``RunGroup`` per run."""

    def __init__(self, kind: Kind, bases: dict[str, str], note: str = "") -> None:
        self.kind = kind
        self.bases = bases  # controller ("" on v2) → folder holding the runs' cgroups
        # v1: the cgroups this process lives in (``<home>/jobhost`` holds the runs'), where
        # a spawner thread goes back to after a spawn.
        self.homes = {controller: os.path.dirname(base) for controller, base in bases.items()}
        self.note = note  # why a cgroup is not used, when it is not
        self._removals: queue.SimpleQueue[RunGroup] = queue.SimpleQueue()
        self._remover: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def detect(cls, mode: Mode = "auto") -> Isolation:
        """Probe the machine; ``mode="cgroup"`` raises ``OSError`` when no cgroup is usable."""
        if mode == "rlimits":
            return cls("rlimits", {}, "rlimits chosen in the settings")
        try:
            mounts = _mounts()
            own = _own_cgroups(_read("/proc/self/cgroup"))
        except OSError as exc:
            mounts, own = {}, {}
            why = f"cannot read the cgroup mounts ({exc.strerror})"
        else:
            why = "no cgroup v1 or v2 hierarchy is mounted"
        found: Isolation | None = None
        if "" in mounts:
            found, why = _detect_v2(mounts[""], own.get("", "/"), why)
        if found is None and all(name in mounts for name in ("memory", "pids")):
            found, why = _detect_v1(mounts, own, why)
        if found is not None:
            found.remove_stale()
            return found
        if mode == "cgroup":
            raise OSError(errno.ENOTSUP, f"isolation = 'cgroup' but {why}")
        return cls("rlimits", {}, why)

    def remove_stale(self) -> None:
        """Remove the empty run cgroups an earlier server left (a crash, a SIGKILL); those
        that still hold processes are runs that outlived it, and stay."""
        # Only old ones: another runner or worker on this machine may have made a cgroup a
        # moment ago and not spawned into it yet.
        cutoff = time.time() - STALE_SECONDS
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                for entry in os.scandir(base):
                    if entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.rmdir(entry.path)

    def describe(self) -> str:
        """One line for ``/healthz`` and the start-up log."""
        if self.kind == "cgroup2":
            return f"cgroup v2 ({', '.join(V2_CONTROLLERS)}) under {self.bases['']}"
        if self.kind == "cgroup1":
            names = ", ".join(self.bases)
            return f"cgroup v1 ({names}) under {self.bases['memory']}"
        return f"rlimits and an environment sweep ({self.note})"

    def group(self, execution_id: str, limits: ResourceLimits) -> RunGroup | None:
        """Create the run's cgroup with ``limits`` written; None without cgroups.

        Raises ``OSError`` when the cgroup cannot be made (nothing is left behind).
        """
        if self.kind == "rlimits":
            return None
        group = RunGroup(self, execution_id, limits)
        try:
            group.create(limits)
        except OSError:
            group.try_remove()
            raise
        return group

    def spawn_in(self, group: RunGroup, spawn: Callable[[], T]) -> T:
        """``spawn()`` such that what it starts is born inside ``group``.

        On v1 the spawning thread joins the run's cgroups for the length of the spawn
        (membership is per thread there, and a child is born in its parent thread's
        cgroups), then goes back to its own: ``vfork`` stays usable and nothing is moved
        after the child exists. A helper thread of the runner (the spawner threads) moves
        itself: three writes, about 0.1 ms. The process's main thread never moves (in v1
        the memory of the whole process is charged to its leader's memory cgroup): called
        there, the spawn runs on a short-lived thread instead (about 3 ms more). On v2 the
        child joins by itself (``RunGroup.preexec``).
        """
        if self.kind != "cgroup1":
            return spawn()
        if threading.get_native_id() == os.getpid() or getattr(_spawner, "stuck", False):
            return self._spawn_on_thread(group, spawn)
        tid = str(threading.get_native_id())
        joined: list[str] = []
        try:
            for controller, path in group.paths.items():
                _write(path + "/tasks", tid)
                joined.append(controller)
            return spawn()
        finally:
            self._leave(group, joined, tid)

    def _leave(self, group: RunGroup, joined: list[str], tid: str) -> None:
        """Send the spawning thread back to its own cgroups, and give the run its exact
        ``pids_max`` (the thread counted while it was inside)."""
        try:
            value = tid.encode()
            for controller in joined:
                os.write(_home_fd(self.homes[controller]), value)
        except OSError as exc:
            # It stays in the run's cgroup: this thread spawns through helpers from now on.
            log.warning("A spawner thread cannot leave the cgroup of a run: %s", exc)
            _spawner.stuck = True
        if joined and group.pids_max is not None:
            with contextlib.suppress(OSError):
                _write(os.path.join(group.paths["pids"], "pids.max"), str(group.pids_max))

    def _spawn_on_thread(self, group: RunGroup, spawn: Callable[[], T]) -> T:
        """``spawn()`` on a fresh thread that joins the run's cgroups and ends there, so it
        is never moved back (for callers on the main thread)."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                tid = str(threading.get_native_id())
                for path in group.paths.values():
                    _write(os.path.join(path, "tasks"), tid)
                outcome.append(spawn())
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="jobhost-spawn-cgroup", daemon=True)
        thread.start()
        thread.join()
        if group.pids_max is not None:  # the thread's place is not the job's to keep
            with contextlib.suppress(OSError):
                _write(os.path.join(group.paths["pids"], "pids.max"), str(group.pids_max))
        if failure:
            raise failure[0]
        return outcome[0]

    def discard(self, group: RunGroup) -> None:
        """Remove ``group`` off the caller's thread (rmdir of a v1 pids cgroup takes most of
        a millisecond), retrying while its last SIGKILLed members are still leaving."""
        with self._lock:
            if self._remover is None or not self._remover.is_alive():
                self._remover = threading.Thread(
                    target=self._remove_all, name="jobhost-cgroup-rm", daemon=True
                )
                self._remover.start()
        self._removals.put(group)

    def _remove_all(self) -> None:
        busy: list[tuple[float, RunGroup]] = []  # (next try, group) of cgroups not empty yet
        while True:
            timeout = None if not busy else max(0.0, busy[0][0] - time.monotonic())
            try:
                group: RunGroup | None = self._removals.get(timeout=timeout)
            except queue.Empty:
                group = None
            now = time.monotonic()
            retry, busy = (
                [g for at, g in busy if at <= now],
                [(at, g) for at, g in busy if at > now],
            )
            for candidate in ([group] if group is not None else []) + retry:
                if not candidate.try_remove():
                    if now - candidate.removing_since > REMOVE_SECONDS:
                        log.warning("Cgroup still has members after SIGKILL: %s", candidate.paths)
                        continue
                    busy.append((now + 0.01, candidate))
            busy.sort(key=lambda item: item[0])


def mode_named(text: str) -> Mode:
    """The settings' ``isolation`` from text (an environment variable); "auto" if unknown."""
    return "cgroup" if text == "cgroup" else "rlimits" if text == "rlimits" else "auto"


def _detect_v2(mount: str, own: str, why: str) -> tuple[Isolation | None, str]:
    try:
        available = _read(os.path.join(mount, "cgroup.controllers")).split()
    except OSError:
        return None, why
    missing = [name for name in V2_CONTROLLERS if name not in available]
    if missing:
        return None, f"cgroup v2 lacks the {', '.join(missing)} controller(s)"
    home = os.path.normpath(mount + own)
    if os.path.basename(home) == "server" and os.path.isdir(os.path.join(home, "..", GROUP)):
        home = os.path.dirname(home)  # an earlier detection here stepped aside already
    enable = " ".join(f"+{name}" for name in V2_CONTROLLERS)
    base = os.path.join(home, GROUP)
    try:
        enabled = _read(os.path.join(home, "cgroup.subtree_control")).split()
        if not all(name in enabled for name in V2_CONTROLLERS):
            if home != os.path.normpath(mount):
                # No process may live in a cgroup that hands controllers down: the service's
                # processes (this server, its runner) step aside into a leaf.
                leaf = os.path.join(home, "server")
                os.makedirs(leaf, exist_ok=True)
                for pid in _read(os.path.join(home, "cgroup.procs")).split():
                    with contextlib.suppress(ProcessLookupError):
                        _write(os.path.join(leaf, "cgroup.procs"), pid)
            _write(os.path.join(home, "cgroup.subtree_control"), enable)
        os.makedirs(base, exist_ok=True)
        if not all(
            name in _read(os.path.join(base, "cgroup.subtree_control")).split()
            for name in V2_CONTROLLERS
        ):
            _write(os.path.join(base, "cgroup.subtree_control"), enable)
    except OSError as exc:
        return None, f"cgroup v2 at {home} is not delegated to this server ({exc.strerror})"
    return Isolation("cgroup2", {"": base}), ""


def _detect_v1(
    mounts: dict[str, str], own: dict[str, str], why: str
) -> tuple[Isolation | None, str]:
    bases: dict[str, str] = {}
    for name in V1_CONTROLLERS:
        if name not in mounts:
            continue
        base = os.path.join(os.path.normpath(mounts[name] + own.get(name, "/")), GROUP)
        try:
            os.makedirs(base, exist_ok=True)
            probe = os.path.join(base, f"probe-{os.getpid()}")
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as exc:
            if name in ("memory", "pids"):
                return None, f"cgroup v1 {name} at {base} is not writable ({exc.strerror})"
            continue  # cpu limits and CPU accounting are optional
        bases[name] = base
    return Isolation("cgroup1", bases), why


_serial = itertools.count(1)  # of the run cgroups this process made


class RunGroup:
    """One run's cgroup (one directory per v1 hierarchy, one on v2)."""

    def __init__(self, isolation: Isolation, execution_id: str, limits: ResourceLimits) -> None:
        self.isolation = isolation
        self.v2 = isolation.kind == "cgroup2"
        self.removing_since = 0.0
        self.pids_max: int | None = None
        # Unique even when an ID comes back (tests, a retried spawn) while the last cgroup
        # of that ID is still being removed; the ID first, for whoever looks.
        name = f"{execution_id}-{os.getpid():x}.{next(_serial):x}"
        cpu_limited = limits.cpu_quota_percent is not None or limits.cpu_weight is not None
        # The cpu hierarchy only when it has a limit to hold: each one joined costs time.
        self.paths = {
            controller: f"{base}/{name}"
            for controller, base in isolation.bases.items()
            if controller != "cpu" or cpu_limited
        }
        # Any one directory lists the members (all hierarchies hold the same processes).
        self._procs = os.path.join(self.paths["" if self.v2 else "pids"], "cgroup.procs")

    def create(self, limits: ResourceLimits) -> None:
        for path in self.paths.values():
            os.mkdir(path)
        for file, value in self._settings(limits):
            _write(file, value)

    def _settings(self, limits: ResourceLimits) -> list[tuple[str, str]]:
        paths = self.paths
        files: list[tuple[str, str]] = []
        cpu: str | None
        if self.v2:
            memory = pids = cpu = paths[""]
        else:
            memory, pids, cpu = paths["memory"], paths["pids"], paths.get("cpu")
        if limits.memory_max_bytes is not None:
            name = "memory.max" if self.v2 else "memory.limit_in_bytes"
            files.append((os.path.join(memory, name), str(limits.memory_max_bytes)))
            if self.v2:  # swapping out would only slow the job down on its way to the limit
                files.append((os.path.join(memory, "memory.swap.max"), "0"))
        if limits.pids_max is not None:
            # v1: the spawning thread counts while it is inside (``Isolation.spawn_in``).
            spare = 0 if self.v2 else 1
            files.append((os.path.join(pids, "pids.max"), str(limits.pids_max + spare)))
            self.pids_max = limits.pids_max
        if cpu is not None and limits.cpu_quota_percent is not None:
            quota = max(1000, round(limits.cpu_quota_percent * CFS_PERIOD_US / 100))
            if self.v2:
                files.append((os.path.join(cpu, "cpu.max"), f"{quota} {CFS_PERIOD_US}"))
            else:
                files.append((os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_US)))
                files.append((os.path.join(cpu, "cpu.cfs_quota_us"), str(quota)))
        if cpu is not None and limits.cpu_weight is not None:
            if self.v2:
                files.append((os.path.join(cpu, "cpu.weight"), str(limits.cpu_weight)))
            else:  # v1 shares: 1024 is the default, as 100 is v2's default weight
                shares = max(2, limits.cpu_weight * 1024 // 100)
                files.append((os.path.join(cpu, "cpu.shares"), str(shares)))
        return files

    def join_file(self) -> str | None:
        """v2: the file a child writes ``0`` to between fork and exec to join the cgroup."""
        return os.path.join(self.paths[""], "cgroup.procs") if self.v2 else None

    def preexec(self) -> Callable[[], None] | None:
        """v2: what the child runs between fork and exec to join the cgroup."""
        procs = self.join_file()
        if procs is None:
            return None

        def join() -> None:
            _write(procs, "0")

        return join

    def members(self) -> list[int]:
        """The processes in the cgroup. Never this server: on v1 a spawning thread of ours
        makes it appear in the list until that thread has fully ended."""
        try:
            pids = [int(pid) for pid in _read(self._procs).split()]
        except OSError:
            return []
        me = os.getpid()
        return [pid for pid in pids if pid != me]

    def signal(self, signum: int) -> bool:
        """Signal every member; True when there was at least one."""
        if signum == signal.SIGKILL and self.v2:
            with contextlib.suppress(OSError):
                _write(os.path.join(self.paths[""], "cgroup.kill"), "1")
                return bool(self.members())
        sent = False
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
                sent = True
        return sent

    def kill_all(self) -> None:
        """SIGKILL members until none is left that has not been sent one (forks race us)."""
        killed: set[int] = set()
        for _ in range(KILL_ROUNDS):
            fresh = [pid for pid in self.members() if pid not in killed]
            if not fresh:
                return
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(fresh)

    def usage(self) -> Usage:
        """Peak memory, CPU seconds and OOM kills as the cgroup counted them."""
        if self.v2:
            base = self.paths[""]
            peak = _int_file(os.path.join(base, "memory.peak"))
            cpu_us = _field(os.path.join(base, "cpu.stat"), "usage_usec")
            cpu = None if cpu_us is None else cpu_us / 1e6
            ooms = _field(os.path.join(base, "memory.events"), "oom_kill") or 0
            return Usage(peak, cpu, ooms)
        memory = self.paths["memory"]
        peak = _int_file(memory + "/memory.max_usage_in_bytes")
        cpuacct = self.paths.get("cpuacct")
        cpu_ns = None if cpuacct is None else _int_file(cpuacct + "/cpuacct.usage")
        ooms = _field(memory + "/memory.oom_control", "oom_kill") or 0
        return Usage(peak, None if cpu_ns is None else cpu_ns / 1e9, ooms)

    def remove(self, *, killed: bool = False) -> None:
        """Kill what is left (unless the caller just did) and remove the directories (in
        the background)."""
        if not killed:
            self.kill_all()
        self.removing_since = time.monotonic()
        self.isolation.discard(self)

    def try_remove(self) -> bool:
        """Remove the directories now; False while members remain (killed meanwhile)."""
        gone = True
        for path in self.paths.values():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    log.warning("Cannot remove cgroup %s: %s", path, exc)
                gone = False
        if not gone:
            self.kill_all()  # a process forked as the last kill went out
        return gone


def _int_file(path: str) -> int | None:
    try:
        return int(_read_small(path).strip())
    except (OSError, ValueError):
        return None


def _field(path: str, name: str) -> int | None:
    """The value of ``name`` in a flat-keyed file (``memory.events``, ``cpu.stat``…)."""
    try:
        text = _read_small(path)
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            with contextlib.suppress(ValueError):
                return int(value)
    return None

"""Everything that isolates one run: its cgroup, rlimits, Unix account, and descendant sweep.

The spawn function calls, in order: ``Confinement.prepare`` (cgroup made, files handed to
the run's user), ``spawn(start)`` with ``popen_kwargs()`` in ``start``, ``started(pid)``;
then ``signal`` for stop and timeout, and ``finish`` when the leader has exited (every
descendant killed, the accounting corrected from the cgroup, the cgroup removed).

Without a cgroup, descendants are found by the ``JOBHOST_EXECUTION_ID`` they inherited in
their environment (a process that clears its environment escapes this sweep; one in a
cgroup cannot escape). Only processes created after the run started are read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import grp
import os
import pwd
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from jobhost.catalog.limits import format_bytes
from jobhost.execution.cgroups import Isolation, RunGroup
from jobhost.execution.trampoline import ExecSetup
from jobhost.models import LaunchSpec, ResourceLimits, RunAs

if TYPE_CHECKING:
    from jobhost.execution.process import Exit

T = TypeVar("T")
EXECUTION_ID_ENV = "JOBHOST_EXECUTION_ID"


class RunAsRefused(ValueError):
    """``run_as`` cannot be honoured here (not root, unknown user or group)."""


@dataclass(frozen=True, slots=True)
class Account:
    """``RunAs`` resolved on the spawning machine."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    umask: int


def resolve(run_as: RunAs) -> Account:
    """The account's ids; RunAsRefused saying what to change."""
    if os.geteuid() != 0:
        raise RunAsRefused(
            f"run_as {run_as.user!r} needs the server to run as root (it runs as uid "
            f"{os.geteuid()}); remove run_as or start JobHost as root"
        )
    try:
        user = pwd.getpwnam(run_as.user)
    except KeyError:
        raise RunAsRefused(
            f"run_as user {run_as.user!r} does not exist on this machine; create it "
            "(useradd) or fix run_as"
        ) from None
    gid = user.pw_gid
    if run_as.group is not None:
        try:
            gid = grp.getgrnam(run_as.group).gr_gid
        except KeyError:
            raise RunAsRefused(
                f"run_as group {run_as.group!r} does not exist on this machine; create it "
                "(groupadd) or fix run_as"
            ) from None
    groups = tuple(os.getgrouplist(user.pw_name, gid))
    return Account(user.pw_name, user.pw_uid, gid, groups, user.pw_dir, run_as.umask)


def oom_message(limits: ResourceLimits) -> str:
    limit = limits.memory_max_bytes
    return "killed: out of memory" + (f" (limit {format_bytes(limit)})" if limit else "")


class Confinement:
    """One run's isolation; see the module docstring for the order of calls."""

    def __init__(
        self,
        isolation: Isolation,
        spec: LaunchSpec,
        group: RunGroup | None,
        account: Account | None,
    ) -> None:
        self.isolation = isolation
        self.execution_id = spec.execution_id
        self.limits = spec.limits
        self.group = group
        self.account = account
        self._start_ticks: int | None = None  # the leader's start, for the sweep
        self._leader: int | None = None
        self._signalled = False  # stop or timeout reached the run
        self._uid = os.geteuid() if account is None else account.uid

    @classmethod
    def prepare(cls, isolation: Isolation, spec: LaunchSpec) -> Confinement:
        """Make the run's cgroup (if any) and hand its files to its user (if ``run_as``).

        Raises ``RunAsRefused`` or ``OSError`` (the cgroup could not be made).
        """
        account = None if spec.run_as is None else resolve(spec.run_as)
        group = isolation.group(spec.execution_id, spec.limits)
        confinement = cls(isolation, spec, group, account)
        if account is not None:
            try:
                confinement._hand_over(spec)
            except OSError:
                if group is not None:
                    group.remove()
                raise
        return confinement

    def _hand_over(self, spec: LaunchSpec) -> None:
        """The state folder, log and result file belong to the run's user."""
        account = self.account
        assert account is not None
        state = spec.env.get("JOBHOST_STATE_DIR")
        for path in (state, spec.log_path):
            if path and os.path.exists(path) and os.stat(path).st_uid != account.uid:
                os.chown(path, account.uid, account.gid)
        # The logs folder is the server's: the job may write only its own result file.
        fd = os.open(spec.result_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchown(fd, account.uid, account.gid)
        finally:
            os.close(fd)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """The child's environment, with the run's user's HOME, USER and LOGNAME."""
        if self.account is None:
            return env
        return {
            **env,
            "HOME": self.account.home,
            "USER": self.account.name,
            "LOGNAME": self.account.name,
        }

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments: the account, and what the child does before exec."""
        # Between fork and exec (a fork instead of a vfork, so only when needed): joining a
        # v2 cgroup, and the limits that must hold from the job's first instruction on.
        steps: list[Callable[[], None]] = []
        join = None if self.group is None else self.group.preexec()
        if join is not None:
            steps.append(join)
        for which, value in self._rlimits():
            steps.append(functools.partial(resource.setrlimit, which, (value, value)))
        if self.limits.nice is not None:
            steps.append(functools.partial(os.setpriority, os.PRIO_PROCESS, 0, self.limits.nice))
        account = self.account
        kwargs: dict[str, Any] = {}
        if account is not None:
            kwargs["umask"] = account.umask
            if steps:  # the account last: the steps above need root (cgroup.procs, nice < 0)
                steps += [
                    functools.partial(os.setgroups, list(account.groups)),
                    functools.partial(os.setresgid, account.gid, account.gid, account.gid),
                    functools.partial(os.setresuid, account.uid, account.uid, account.uid),
                ]
            else:
                kwargs.update(
                    user=account.uid, group=account.gid, extra_groups=list(account.groups)
                )
        if steps:

            def preexec() -> None:
                for step in steps:
                    step()

            kwargs["preexec_fn"] = preexec
        return kwargs

    def exec_setup(self) -> ExecSetup | None:
        """The same steps for the spawn trampoline (``jobhost.execution.trampoline``); None
        on cgroup v1, where the child must be born from a thread inside the run's cgroups
        (spawned directly)."""
        join = None
        if self.group is not None:
            join = self.group.join_file()
            if join is None:
                return None
        account = self.account
        return ExecSetup(
            rlimits=tuple(self._rlimits()),
            nice=self.limits.nice,
            uid=None if account is None else account.uid,
            gid=None if account is None else account.gid,
            groups=() if account is None else account.groups,
            umask=None if account is None else account.umask,
            cgroup_procs=join,
        )

    def spawn(self, start: Callable[[], T]) -> T:
        """``start()`` (the spawn itself) such that the child is born in the run's cgroup."""
        if self.group is None:
            return start()
        return self.isolation.spawn_in(self.group, start)

    def _rlimits(self) -> list[tuple[int, int]]:
        limits = self.limits
        rlimits: list[tuple[int, int]] = []
        if limits.open_files is not None:
            rlimits.append((resource.RLIMIT_NOFILE, limits.open_files))
        if self.group is None:
            if limits.memory_max_bytes is not None:
                rlimits.append((resource.RLIMIT_AS, limits.memory_max_bytes))
            if limits.pids_max is not None:
                rlimits.append((resource.RLIMIT_NPROC, limits.pids_max))
        return rlimits

    def started(self, pid: int) -> None:
        """Note the leader, whose start time bounds the sweep (processes started since)."""
        self._leader = pid

    def signal(self, signum: int) -> None:
        """Signal every descendant, those that left the process group included."""
        if not self._signalled and self.group is None and self._leader is not None:
            # Read at the first signal, not at every spawn: the leader is not reaped before
            # its run's last signal, so its pid still names it.
            self._start_ticks = _start_ticks(self._leader)
        self._signalled = True
        if self.group is not None:
            self.group.signal(signum)
        else:
            for pid in self._descendants():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def finish(self, exit: Exit) -> Exit:
        """Kill what is left of the run, correct its accounting, remove its cgroup."""
        if self.group is None:
            # The sweep reads every process on the machine (about 10 ms of CPU on a busy
            # host), so only a run that was stopped or timed out pays it at its end.
            if self._signalled:
                self.signal(signal.SIGKILL)
            return exit
        group = self.group
        group.kill_all()
        usage = group.usage()
        group.remove(killed=True)
        changes: dict[str, Any] = {}
        if usage.peak_bytes is not None:
            changes["peak_rss_bytes"] = usage.peak_bytes
        if usage.cpu_seconds is not None:
            changes["cpu_seconds"] = max(exit.cpu_seconds, usage.cpu_seconds)
        if usage.oom_kills and exit.exit_signal == signal.SIGKILL:
            changes["error"] = oom_message(self.limits)
        elif usage.oom_kills and exit.exit_code != 0:  # the kernel chose one of its children
            changes["error"] = "a process of the run was " + oom_message(self.limits)
        return dataclasses.replace(exit, **changes) if changes else exit

    def abandon(self) -> None:
        """The spawn failed: remove the cgroup made for it."""
        if self.group is not None:
            self.group.remove()

    def _descendants(self) -> list[int]:
        """Processes carrying this run's ID in their environment, started since the run."""
        since = self._start_ticks
        if since is None:
            return []
        marker = f"{EXECUTION_ID_ENV}={self.execution_id}".encode()
        found = []
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != self._uid:
                    continue
                ticks = _start_ticks(int(entry))
                if ticks is None or ticks < since:
                    continue
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if marker in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None

"""The spawn trampoline's own process: forks job processes on behalf of its parent.

Why it exists: the kernel's ``ru_maxrss`` of a process counts the memory of the address
space it had when it called ``exec``; a child forked (or vforked) from the runner starts
from the runner's 20-40 MB, so without a cgroup every run recorded at least that as its
peak. This process is small (the interpreter without ``site``: about 5 MB), and it
creates each job with ``clone(CLONE_PARENT)``: the job starts from *its* address space,
yet is a child of the runner, which keeps its pidfd, ``wait4`` and rusage.

Run as ``python -I -S spawn_helper.py <socket fd>``; standard library only, never
imported by the server. Requests (one at a time, from ``jobhost.execution.trampoline``):
a 4-byte length and a ``marshal``-ed dict, with stdin, stdout, stderr and control
descriptors attached (``SCM_RIGHTS``); the reply is ``{"pid": N}``, with ``"errno"`` and
``"step"`` when the child failed before its ``exec`` (it then exits 127, for the parent
to reap).
"""

from __future__ import annotations

# Only built-in and small extension modules: whatever this process holds in memory when
# it forks is the floor of every job's recorded peak (``signal``, ``socket`` and ``json``
# would import ``enum``, ``selectors`` and more; their underscore modules do not).
import _signal  # type: ignore[import-not-found]  # no stub; ``signal`` imports enum
import _socket
import ctypes
import fcntl
import marshal
import os
import resource
import sys
from _struct import Struct

TYPE_CHECKING = False  # ``typing`` alone would add 1.5 MB to every job's recorded peak
if TYPE_CHECKING:
    from typing import Any, NoReturn

CLONE_PARENT = 0x00008000
SIGCHLD = 17
SYS_CLONE = {"x86_64": 56, "aarch64": 220}  # flags come first on both; the rest are 0
HEADER = Struct("!I")
FDS = 4  # stdin, stdout, stderr, control (an older sender: stdin, stdout and stderr, control)
INT = 4  # bytes of one descriptor number in SCM_RIGHTS
CONTROL_FD = 3  # the job's JOBHOST_CONTROL_FD
NOT_THERE = (2, 20)  # ENOENT, ENOTDIR: try the next folder of PATH
FIRST_FREE = 10  # descriptors are moved above this before being put in place


def receive(sock: _socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One request and its descriptors; None when the parent has gone away."""
    fds: list[int] = []
    head = b""
    while len(head) < HEADER.size:
        data, ancillary, _, _ = sock.recvmsg(HEADER.size - len(head), _socket.CMSG_SPACE(FDS * INT))
        if not data:
            return None
        head += data
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [
                    int.from_bytes(payload[i : i + INT], sys.byteorder, signed=True)
                    for i in range(0, len(payload) - INT + 1, INT)
                ]
    (length,) = HEADER.unpack(head)
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    request: dict[str, Any] = marshal.loads(body)  # noqa: S302 - from our own parent
    return request, fds


def programs(argv0: str, env: dict[str, str]) -> list[str]:
    """Where ``argv0`` may be, in ``execvpe`` order (worked out before the fork: every page
    of code the child runs before its ``exec`` counts in its peak memory)."""
    if "/" in argv0:
        return [argv0]
    path = env.get("PATH", os.defpath)
    return [os.path.join(folder or ".", argv0) for folder in path.split(os.pathsep)]


def descriptors(fds: list[int], report: int) -> int:
    """Put stdin, stdout, stderr and the control pipe in place, close every other one;
    returns where ``report`` went."""
    if len(fds) == FDS - 1:  # an older sender: stdout and stderr are one pipe
        fds = [fds[0], fds[1], fds[1], fds[2]]
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, FIRST_FREE) for fd in (*fds, report)]
    for target, fd in enumerate(moved[:FDS]):
        os.dup2(fd, target)
    report = os.dup2(moved[FDS], CONTROL_FD + 1, inheritable=False)
    os.closerange(CONTROL_FD + 2, 1 << 30)  # close_range(2) under the hood
    return report


def child(
    request: dict[str, Any], fds: list[int], report: int, env: dict[str, str], paths: list[str]
) -> NoReturn:
    """In the new process: set it up as the job, then exec; on failure, say which step."""
    step = "cgroup"
    try:
        if request["cgroup"] is not None:  # cgroup v2: join the run's cgroup first
            joined = os.open(request["cgroup"], os.O_WRONLY)
            os.write(joined, b"0")
            os.close(joined)
        step = "setup"
        os.setsid()
        report = descriptors(fds, report)
        for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT):
            _signal.signal(signum, _signal.SIG_DFL)  # as subprocess restores them
        step = "chdir"
        os.chdir(request["cwd"])
        step = "setrlimit"
        for which, value in request["rlimits"]:
            resource.setrlimit(which, (value, value))
        step = "nice"
        if request["nice"] is not None:
            os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
        account = request["account"]
        if account is not None:  # last: the steps above may need root
            step = "account"
            os.setgroups(account["groups"])
            os.setresgid(account["gid"], account["gid"], account["gid"])
            os.setresuid(account["uid"], account["uid"], account["uid"])
        if request["umask"] is not None:
            os.umask(request["umask"])
        step = "exec"
        failed: OSError | None = None
        for path in paths:
            try:
                os.execve(path, request["argv"], env)  # noqa: S606 - the job, as given
            except (FileNotFoundError, NotADirectoryError) as exc:
                failed = failed or exc
            except OSError as exc:  # as execvpe: the first other error is the one reported
                failed = exc if failed is None or failed.errno in NOT_THERE else failed
        raise failed or FileNotFoundError(2, "No such file or directory")
    except OSError as exc:
        os.write(report, f"{exc.errno or 0} {step}".encode())
    except BaseException:
        os.write(report, f"0 {step}".encode())
    finally:
        os._exit(127)


def spawn(clone: Any, number: int, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    env = {**request["env"], "JOBHOST_CONTROL_FD": str(CONTROL_FD)}
    paths = programs(request["argv"][0], env)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    pid = clone(number, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        child(request, fds, report_w, env, paths)
    os.close(report_w)
    try:
        if pid < 0:
            return {"pid": None, "errno": ctypes.get_errno(), "step": "clone"}
        failure = b""
        while chunk := os.read(report_r, 256):  # EOF: the exec closed it
            failure += chunk
    finally:
        os.close(report_r)
    if not failure:
        return {"pid": pid}
    errno, step = failure.decode().split(" ", 1)
    return {"pid": pid, "errno": int(errno), "step": step}


def main() -> None:
    sock = _socket.socket(fileno=int(sys.argv[1]))
    clone = ctypes.CDLL(None, use_errno=True).syscall
    number = SYS_CLONE[os.uname().machine]
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # a terminal's Ctrl-C is for the server
    while (received := receive(sock)) is not None:
        request, fds = received
        try:
            reply = spawn(clone, number, request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        body = marshal.dumps(reply)
        sock.sendall(HEADER.pack(len(body)) + body)


if __name__ == "__main__":
    main()

"""Running a job's ``init-job`` script before a start or a test.

Contract: the proposed variables arrive as a JSON object on stdin and in
``JOBHOST_VARIABLES``; the script prints the final variables as a JSON object on
stdout (they replace the proposed ones), or nothing to keep them. A non-zero exit
rejects the start, and the last non-empty stderr line is what the user is told.

The script runs in its own process group with the job folder as its working
directory, watched by pidfd on the loop (no thread): it is over when the script exits,
and what it left in its group is killed then; on timeout or cancellation the whole
group is killed. Captured output is bounded, so a hook that floods its pipes cannot
exhaust the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from jobhost.catalog.definition import command_for
from jobhost.catalog.discovery import Job
from jobhost.errors import InitHookFailed, InvalidDefinition
from jobhost.execution.output import CHUNK
from jobhost.execution.termination import DRAIN_CHUNKS

MAX_CAPTURE_BYTES = 1024 * 1024
# Linux refuses a single environment string over 128 KiB (MAX_ARG_STRLEN); bigger
# variable sets travel on stdin only, rather than making the start fail.
MAX_ENV_VALUE_BYTES = 120 * 1024


class _Capture:
    """One output pipe of the hook, read as the loop finds it readable, bounded."""

    def __init__(self, fd: int, *, keep_tail: bool) -> None:
        self.fd = fd
        self.kept = bytearray()
        self.dropped = False
        self.open = True
        self._keep_tail = keep_tail

    def read(self) -> bool:
        """One chunk; False when nothing more is there now (or ever)."""
        try:
            chunk = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        self.kept += chunk
        if len(self.kept) > MAX_CAPTURE_BYTES:
            self.dropped = True
            if self._keep_tail:
                del self.kept[: len(self.kept) - MAX_CAPTURE_BYTES]
            else:
                del self.kept[MAX_CAPTURE_BYTES:]
        return True

    def close(self) -> None:
        if self.open:
            self.open = False
            asyncio.get_running_loop().remove_reader(self.fd)


class _Hook:
    """The hook's process, watched like a job's (pipes and a pidfd on the loop, no
    thread): it is over when the script exits, whatever it left holding its pipes."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], payload: bytes) -> None:
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,  # its own group: killed as a whole
        )
        assert self.popen.stdin and self.popen.stdout and self.popen.stderr
        self.pidfd = os.pidfd_open(self.popen.pid)
        self._stdin = self.popen.stdin.fileno()
        self._payload = memoryview(payload)
        self.stdout = _Capture(self.popen.stdout.fileno(), keep_tail=False)
        self.stderr = _Capture(self.popen.stderr.fileno(), keep_tail=True)
        for fd in (self._stdin, self.stdout.fd, self.stderr.fd):
            os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        loop.add_writer(self._stdin, self._feed)
        loop.add_reader(self.stdout.fd, self.stdout.read)
        loop.add_reader(self.stderr.fd, self.stderr.read)
        loop.add_reader(self.pidfd, self._reap)

    def _feed(self) -> None:
        # A hook that exits without reading stdin closes the pipe: that is allowed.
        try:
            written = os.write(self._stdin, self._payload[:CHUNK])
        except BlockingIOError:
            return
        except OSError:
            written = len(self._payload)
        self._payload = self._payload[written:]
        if not self._payload:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin >= 0:
            asyncio.get_running_loop().remove_writer(self._stdin)
            assert self.popen.stdin is not None
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            self._stdin = -1

    def _reap(self) -> None:
        if os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            return  # woken early
        _kill_group(self.popen.pid)  # what it left in its group goes too
        code = self.popen.wait()
        asyncio.get_running_loop().remove_reader(self.pidfd)
        for capture in (self.stdout, self.stderr):
            for _ in range(DRAIN_CHUNKS):
                if not capture.read():
                    break
        if not self.exited.done():
            self.exited.set_result(code)

    async def close(self) -> None:
        """Release everything; a hook still running (timeout, cancellation) is killed."""
        if not self.exited.done():
            _kill_group(self.popen.pid)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.exited)
        self._close_stdin()
        self.stdout.close()
        self.stderr.close()
        asyncio.get_running_loop().remove_reader(self.pidfd)
        os.close(self.pidfd)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _final_variables(name: str, stdout: bytes, proposed: dict[str, Any]) -> dict[str, Any]:
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return proposed
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InitHookFailed(
            f"{name} printed invalid JSON on stdout ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); it must print a JSON object of variables, or nothing"
        ) from None
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise InitHookFailed(
            f"{name} must print a JSON object of variables on stdout (or nothing), got {kind}"
        )
    return value


async def run_init_hook(
    job: Job, variables: dict[str, Any], *, timeout: float, env: Mapping[str, str]
) -> dict[str, Any]:
    """The final variables after ``job``'s init script; ``variables`` when it has none.

    ``env`` is the child's whole environment; ``JOBHOST_JOB_ID`` and
    ``JOBHOST_VARIABLES`` are added (the latter only up to 120 KiB: stdin always
    carries the variables). Raises InitHookFailed with the message to show.
    """
    script = job.init_script
    if script is None:
        return variables
    try:
        argv = command_for(script)
    except InvalidDefinition as exc:
        raise InitHookFailed(exc.message) from None
    payload = json.dumps(variables, ensure_ascii=False, default=str)
    child_env = {**env, "JOBHOST_JOB_ID": job.id}
    if len(payload.encode("utf-8")) <= MAX_ENV_VALUE_BYTES:
        child_env["JOBHOST_VARIABLES"] = payload
    try:
        hook = _Hook(argv, str(job.folder), child_env, payload.encode("utf-8"))
    except OSError as exc:
        raise InitHookFailed(f"{script.name} could not be started: {exc.strerror or exc}") from None
    try:
        code = await asyncio.wait_for(asyncio.shield(hook.exited), timeout)
    except TimeoutError:
        raise InitHookFailed(f"{script.name} did not finish within {timeout:g} s") from None
    finally:
        await hook.close()
    stdout, stdout_dropped, stderr = bytes(hook.stdout.kept), hook.stdout.dropped, hook.stderr.kept
    if code != 0:
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
        last = next((line for line in reversed(lines) if line), None)
        raise InitHookFailed(last or f"{script.name} exited with code {code}")
    if stdout_dropped:
        raise InitHookFailed(
            f"{script.name} printed more than {MAX_CAPTURE_BYTES} bytes on stdout; "
            "it must print only a JSON object of variables"
        )
    return _final_variables(script.name, stdout, variables)


async def run_bounded(
    argv: list[str], cwd: str, env: dict[str, str], *, timeout: float
) -> tuple[int, bytes, bool, bytes]:
    """Run a helper script as init scripts run (own process group, no shell, pidfd-watched,
    output capped at ``MAX_CAPTURE_BYTES``): (exit code, stdout, stdout cut, stderr).
    TimeoutError when it runs past ``timeout`` (its group is killed); OSError when it
    cannot start."""
    hook = _Hook(argv, cwd, env, b"")
    try:
        code = await asyncio.wait_for(asyncio.shield(hook.exited), timeout)
    finally:
        await hook.close()
    return code, bytes(hook.stdout.kept), hook.stdout.dropped, bytes(hook.stderr.kept)

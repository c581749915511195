"""Running a job's ``init-job`` script before a start or a test.

Contract: the proposed variables arrive as a JSON object on stdin and in
``JOBHOST_VARIABLES``; the script prints the final variables as a JSON object on
stdout (they replace the proposed ones), or nothing to keep them. A non-zero exit
rejects the start, and the last non-empty stderr line is what the user is told.

The script runs in its own process group with the job folder as its working
directory; on timeout or cancellation the whole group is killed. Captured output is
bounded, so a hook that floods its pipes cannot exhaust the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping
from typing import Any

from jobhost.catalog.definition import command_for
from jobhost.catalog.discovery import Job
from jobhost.errors import InitHookFailed, InvalidDefinition

MAX_CAPTURE_BYTES = 1024 * 1024
# Linux refuses a single environment string over 128 KiB (MAX_ARG_STRLEN); bigger
# variable sets travel on stdin only, rather than making the start fail.
MAX_ENV_VALUE_BYTES = 120 * 1024


async def _read_bounded(
    stream: asyncio.StreamReader, limit: int, *, keep_tail: bool
) -> tuple[bytes, bool]:
    """Everything read, up to ``limit`` bytes (the head, or the tail); True if some was dropped."""
    kept = bytearray()
    dropped = False
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > limit:
            dropped = True
            if keep_tail:
                del kept[: len(kept) - limit]
            else:
                del kept[limit:]
    return bytes(kept), dropped


async def _feed(stdin: asyncio.StreamWriter, payload: bytes) -> None:
    # A hook that exits without reading stdin closes the pipe: that is allowed.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(payload)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()
        await stdin.wait_closed()


async def _communicate(
    process: asyncio.subprocess.Process, payload: bytes
) -> tuple[int, bytes, bool, bytes]:
    """(exit code, stdout head, whether stdout overflowed, stderr tail)."""
    if process.stdin is None or process.stdout is None or process.stderr is None:
        raise RuntimeError("init hook started without pipes")
    _, (stdout, dropped), (stderr, _) = await asyncio.gather(
        _feed(process.stdin, payload),
        _read_bounded(process.stdout, MAX_CAPTURE_BYTES, keep_tail=False),
        _read_bounded(process.stderr, MAX_CAPTURE_BYTES, keep_tail=True),
    )
    return await process.wait(), stdout, dropped, stderr


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
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=job.folder,
            env=child_env,
            start_new_session=True,
        )
    except OSError as exc:
        raise InitHookFailed(f"{script.name} could not be started: {exc.strerror or exc}") from None
    try:
        code, stdout, stdout_dropped, stderr = await asyncio.wait_for(
            _communicate(process, payload.encode("utf-8")), timeout
        )
    except TimeoutError:
        raise InitHookFailed(f"{script.name} did not finish within {timeout:g} s") from None
    finally:
        if process.returncode is None:
            # Timeout or cancellation: the hook and anything it spawned go.
            _kill_group(process.pid)
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
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

"""What the server and the runner say to each other over the runner's unix socket.

One JSON object a line, both ways; whatever one side has to say in a loop iteration goes
out in one write (``Outbox``), and lines are split from whole reads (``LineBuffer``). The
server sends operations (``op``): ``start`` (a launch spec), ``stop``, ``ack`` (an exit
record is stored: forget it), and requests that get one reply with the same ``req``
number: ``adopt``, ``kill``, ``list``. The runner
sends events (``e``): ``s`` started, ``o`` output total, ``p`` progress, ``x`` exited, and
``r`` replies.

The socket lives in the data dir (``runner.sock``, mode 0600 in a folder of the data
dir's owner) and the runner accepts only peers of its own uid: whoever may talk to it
may start processes as that user.

A launch spec travels as a list in ``LaunchSpec``'s field order (``spec_to_wire``): no
per-run ``dataclasses.asdict`` copy, and a third of the bytes. A runner says which
protocol it speaks in its folder (``PROTOCOL_NAME``, written before it listens); a server
finding none (a runner started by an older JobHost, still serving runs across an upgrade)
sends the spec as an object, which every runner reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from jobhost.models import NO_LIMITS, ExitInfo, LaunchSpec, ResourceLimits, RunAs

SOCKET_NAME = "runner.sock"
LOCK_NAME = "runner.lock"
LOG_NAME = "runner.log"
PROTOCOL_NAME = "protocol"  # the runner's protocol version, in its folder
PROTOCOL = 2  # 2: launch specs as lists; 1 (no file): as objects
READY = b"ready\n"  # the runner listens (or another one already did)
MAX_LINE = 16 * 1024 * 1024  # a launch spec carries the whole environment

Message = dict[str, Any]


def runner_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Where a data dir's runner keeps its socket, lock and log."""
    return Path(data_dir).resolve() / "runner"


def short_path(directory_fd: int, name: str) -> str:
    """A path to ``name`` in an open folder that fits a unix socket address (108 bytes),
    however deep the folder is: through ``/proc/self/fd``."""
    return f"/proc/self/fd/{directory_fd}/{name}"


# One encoder for every message: ``json.dumps`` with any argument builds a new one per
# call, which cost about as much as encoding a start message.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(message: Message) -> bytes:
    return _ENCODER.encode(message).encode() + b"\n"


def decode(line: bytes) -> Message:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def runner_protocol(directory: Path) -> int:
    """The protocol the runner serving ``directory`` speaks (1 when it does not say)."""
    try:
        return int((directory / PROTOCOL_NAME).read_text())
    except (OSError, ValueError):
        return 1


def spec_to_wire(spec: LaunchSpec, protocol: int = PROTOCOL) -> list[Any] | Message:
    """The spec in field order (``protocol`` 2), or as an object for an older runner."""
    if protocol < 2:
        return dataclasses.asdict(spec)
    limits = spec.limits
    run_as = spec.run_as
    return [
        spec.execution_id,
        spec.job_id,
        spec.argv,
        spec.cwd,
        spec.env,
        spec.log_path,
        spec.result_path,
        spec.timeout_seconds,
        spec.stop_grace_seconds,
        spec.max_output_bytes,
        spec.queue,
        spec.secrets,
        None if limits is NO_LIMITS else [getattr(limits, name) for name in _LIMITS],
        None if run_as is None else [run_as.user, run_as.group, run_as.umask],
    ]


def spec_from_wire(raw: list[Any] | Message) -> LaunchSpec:
    if isinstance(raw, dict):
        fields = {name: value for name, value in raw.items() if name in _SPEC}
        fields["secrets"] = tuple(fields.get("secrets", ()))  # JSON has no tuples
        return LaunchSpec(**fields)
    (
        execution_id,
        job_id,
        argv,
        cwd,
        env,
        log_path,
        result_path,
        timeout,
        grace,
        max_output,
        queue,
        secrets,
        limits,
        run_as,
    ) = raw
    return LaunchSpec(
        execution_id=execution_id,
        job_id=job_id,
        argv=argv,
        cwd=cwd,
        env=env,
        log_path=log_path,
        result_path=result_path,
        timeout_seconds=timeout,
        stop_grace_seconds=grace,
        max_output_bytes=max_output,
        queue=queue,
        secrets=tuple(secrets),
        limits=NO_LIMITS if limits is None else ResourceLimits(*limits),
        run_as=None if run_as is None else RunAs(*run_as),
    )


_SPEC = frozenset(field.name for field in dataclasses.fields(LaunchSpec))
_LIMITS = tuple(field.name for field in dataclasses.fields(ResourceLimits))
_EXIT = tuple(field.name for field in dataclasses.fields(ExitInfo))
_EXIT_DEFAULTS = tuple((field.name, field.default) for field in dataclasses.fields(ExitInfo)[2:])


def exit_to_wire(info: ExitInfo) -> Message:
    # Only what differs from the defaults: a clean exit is a handful of fields.
    wire: Message = {"exit_code": info.exit_code, "exit_signal": info.exit_signal}
    for name, default in _EXIT_DEFAULTS:
        value = getattr(info, name)
        if value is not default and (value != default or type(value) is not type(default)):
            wire[name] = value
    return wire


def exit_from_wire(raw: Message) -> ExitInfo:
    return ExitInfo(**{name: value for name, value in raw.items() if name in _EXIT})


class LineBuffer:
    """Splits what one side reads into lines; ``ValueError`` for a line over ``limit``."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if len(self._partial) > self._limit:
            raise ValueError(f"a message is longer than {self._limit} bytes")
        return data[:end].splitlines() if end else []


async def read_lines(reader: asyncio.StreamReader) -> AsyncIterator[list[bytes]]:
    """Each batch of whole lines as it arrives (an async iterator of lists), until EOF."""
    lines = LineBuffer()
    while data := await reader.read(1 << 16):
        if batch := lines.feed(data):
            yield batch


class Outbox:
    """Messages written in one ``write`` per loop iteration, however many were sent in it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def send(self, message: Message) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(encode(message))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self.writer.is_closing():
            self.writer.write(b"".join(pending))

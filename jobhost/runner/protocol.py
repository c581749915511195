"""What the server and the runner say to each other over the runner's unix socket.

One JSON object a line, both ways. The server sends operations (``op``): ``start`` (a
launch spec), ``stop``, ``ack`` (an exit record is stored: forget it), and requests that
get one reply with the same ``req`` number: ``adopt``, ``kill``, ``list``. The runner
sends events (``e``): ``s`` started, ``o`` output total, ``p`` progress, ``x`` exited, and
``r`` replies.

The socket lives in the data dir (``runner.sock``, mode 0600 in a folder of the data
dir's owner) and the runner accepts only peers of its own uid: whoever may talk to it
may start processes as that user.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from jobhost.models import ExitInfo, LaunchSpec

SOCKET_NAME = "runner.sock"
LOCK_NAME = "runner.lock"
LOG_NAME = "runner.log"
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


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def spec_to_wire(spec: LaunchSpec) -> Message:
    return dataclasses.asdict(spec)


def spec_from_wire(raw: Message) -> LaunchSpec:
    names = {field.name for field in dataclasses.fields(LaunchSpec)}
    return LaunchSpec(**{name: value for name, value in raw.items() if name in names})


def exit_to_wire(info: ExitInfo) -> Message:
    return dataclasses.asdict(info)


def exit_from_wire(raw: Message) -> ExitInfo:
    names = {field.name for field in dataclasses.fields(ExitInfo)}
    return ExitInfo(**{name: value for name, value in raw.items() if name in names})

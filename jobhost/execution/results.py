"""The result file a job may write (``jobhost.job.result``): read bounded, then parsed.

One reader for every supervisor of a process: the server reads the file its executor
left (and removes it), the Celery worker reads its local file to send the bytes on.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from jobhost.execution.termination import MAX_RESULT_BYTES


def read_result_bytes(path: str, *, remove: bool = True) -> tuple[bytes | None, str | None]:
    """The file's bytes, at most ``MAX_RESULT_BYTES`` + 1 (one more says it is too large),
    and an error when it exists but cannot be read; (None, None) when there is none.
    With ``remove`` the file is gone afterwards, read or not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # most jobs write no result: one syscall, nothing to remove
        return None, None
    except OSError as exc:
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return None, f"Could not read the result file: {exc}"
    try:
        with open(fd, "rb") as handle:
            return handle.read(MAX_RESULT_BYTES + 1), None
    except OSError as exc:
        return None, f"Could not read the result file: {exc}"
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def parse_result(raw: bytes | None) -> tuple[Any, str | None]:
    """The result value, or None with the reason it was ignored."""
    if not raw:  # a run_as job's result file is made for it beforehand: empty is none
        return None, None
    if len(raw) > MAX_RESULT_BYTES:
        return None, f"Result ignored: larger than {MAX_RESULT_BYTES} bytes"
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return None, f"Result ignored: not valid JSON ({exc})"


def read_result(path: str) -> tuple[Any, str | None]:
    """Read, remove and parse the result file: (value, None), (None, why), or (None, None)."""
    raw, error = read_result_bytes(path)
    if error is not None:
        return None, error
    return parse_result(raw)

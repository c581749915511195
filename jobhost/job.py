"""What job scripts import: the run's facts, the result, and progress.

    from jobhost.job import context, progress, set_result

    for i, item in enumerate(items):
        progress(i / len(items), f"item {item}")
    set_result({"processed": len(items)})

Standard library only, and cheap to import: scripts start often. Outside JobHost (no
``JOBHOST_*`` environment) everything still works with empty defaults, so a script can
be run by hand: ``context`` is empty, ``state_dir`` is the current directory,
``set_result`` warns on stderr and ``progress`` does nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["JobContext", "check_variables", "context", "progress", "set_result"]

VAR_PREFIX = "JOBHOST_VAR_"
# Even fully escaped (6 bytes a character) a line stays under PIPE_BUF (4096), so a
# write is atomic and lines from several threads never interleave.
MAX_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class JobContext:
    """The facts of the current run, from the job-script contract's environment."""

    execution_id: str = ""
    job_id: str = ""
    user: str = ""
    roles: tuple[str, ...] = ()
    test: bool = False
    dry_run: bool = False  # JOBHOST_DRY_RUN=1: report what would change, change nothing
    variables: dict[str, Any] = field(default_factory=dict)
    result_path: Path | None = None
    state_dir: Path = field(default_factory=Path.cwd)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> JobContext:
        """Build the context from ``environ`` (default: ``os.environ``)."""
        env = dict(os.environ) if environ is None else environ
        variables: dict[str, Any] = {}
        raw = env.get("JOBHOST_VARIABLES")
        if raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                _warn("JOBHOST_VARIABLES is not valid JSON; using the JOBHOST_VAR_* values")
            else:
                if isinstance(decoded, dict):
                    variables.update(decoded)
        for name, value in env.items():
            if name.startswith(VAR_PREFIX) and len(name) > len(VAR_PREFIX):
                variables.setdefault(name[len(VAR_PREFIX) :], value)
        result = env.get("JOBHOST_RESULT_PATH")
        state = env.get("JOBHOST_STATE_DIR")
        return cls(
            execution_id=env.get("JOBHOST_EXECUTION_ID", ""),
            job_id=env.get("JOBHOST_JOB_ID", ""),
            user=env.get("JOBHOST_USER", ""),
            roles=tuple(role for role in env.get("JOBHOST_ROLES", "").split(",") if role),
            test=env.get("JOBHOST_TEST", "0") == "1",
            dry_run=env.get("JOBHOST_DRY_RUN", "0") == "1",
            variables=variables,
            result_path=Path(result) if result else None,
            state_dir=Path(state) if state else Path.cwd(),
        )


_context: JobContext | None = None

if TYPE_CHECKING:
    context: JobContext  # provided lazily by the module ``__getattr__`` below


def get_context() -> JobContext:
    """The context of this run, built once on first use."""
    global _context  # one process, one run: the value is cached
    if _context is None:
        _context = JobContext.from_environ()
    return _context


def __getattr__(name: str) -> Any:
    # ``from jobhost.job import context`` builds the context lazily (PEP 562).
    if name == "context":
        return get_context()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _warn(message: str) -> None:
    print(f"jobhost: {message}", file=sys.stderr, flush=True)


def set_result(value: Any) -> None:
    """Save ``value`` as the run's JSON result (atomically: a reader never sees half of it).

    Raises ``TypeError`` if ``value`` cannot be encoded as JSON.
    """
    encoded = json.dumps(value)
    target = os.environ.get("JOBHOST_RESULT_PATH")
    if not target:
        _warn("JOBHOST_RESULT_PATH is not set, so the result is not saved (run under JobHost)")
        return
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(encoded)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_control_fd: int | None = None


def _control() -> int | None:
    global _control_fd  # set up once per process
    if _control_fd is None:
        try:
            fd = int(os.environ["JOBHOST_CONTROL_FD"])
            # Never let a busy host stall the job: a full pipe drops the update instead.
            os.set_blocking(fd, False)
        except (KeyError, ValueError, OSError):
            return None
        _control_fd = fd
    return _control_fd


def progress(fraction: float | None, message: str | None = None) -> None:
    """Report progress (``fraction`` is clamped to 0..1) and an optional message.

    Silently does nothing outside JobHost or when the host is not listening.
    """
    fd = _control()
    if fd is None:
        return
    if fraction is not None:
        fraction = float(fraction)
        fraction = None if math.isnan(fraction) else min(1.0, max(0.0, fraction))
    line: dict[str, Any] = {"progress": fraction}
    if message is not None:
        line["message"] = str(message)[:MAX_MESSAGE]
    data = (json.dumps(line) + "\n").encode()
    with contextlib.suppress(OSError):  # the host went away or the pipe is full
        os.write(fd, data)


def check_variables(check: Callable[[dict[str, Any]], str | None]) -> int:
    """An init-job script's contract in one call: ``sys.exit(check_variables(check))``.

    The proposed variables come as JSON on stdin; ``check`` may normalise them in place
    and returns the reason to refuse the start (one line) or None; a ``ValueError`` it
    raises is such a reason too. Accepted, the variables are printed as JSON (exit 0);
    refused, the reason goes to stderr (exit 1).
    """
    text = sys.stdin.read()
    variables: dict[str, Any] = json.loads(text) if text.strip() else {}
    try:
        problem = check(variables)
    except ValueError as error:
        problem = str(error)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(json.dumps(variables))
    return 0

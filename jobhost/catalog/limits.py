"""job.json's ``limits`` and ``run_as`` (and the same ``limits`` as settings defaults).

``limits`` (every field optional)::

    "limits": {"memory_max": "512M", "cpu_quota": "150%", "cpu_weight": 100,
               "pids_max": 256, "nice": 10, "open_files": 4096, "max_runtime": "2h"}

Sizes are bytes, or a number with a binary suffix (``K``, ``M``, ``G``, ``T``; ``KiB``/``KB``
read the same). ``cpu_quota`` is a percentage of one CPU ("150%", or the number 150).
``max_runtime`` is seconds, or a number with ``s``, ``m``, ``h`` or ``d``; it is the same
limit as the older ``timeout_seconds``, so setting both to different values is an error.

``run_as`` is a user name, or ``{"user": "backup", "group": "backup", "umask": "027"}``.
How each limit is enforced (cgroup or rlimit) is ``jobhost.execution.cgroups``' business.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from jobhost.models import ResourceLimits, RunAs

MIN_MEMORY = 1024 * 1024
MIN_OPEN_FILES = 16
MAX_OPEN_FILES = 1 << 20  # Linux's default nr_open
MAX_PIDS = 4_194_304  # the kernel's PID_MAX_LIMIT
MAX_MEMORY = 1 << 50  # 1P: far past any machine, short of overflowing the kernel's counters
MAX_RUNTIME = 365 * 86400.0  # as timeout_seconds
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# POSIX portable user names (plus the upper case many sites use).
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_UMASK = re.compile(r"0?[0-7]{3}")


def format_bytes(size: int) -> str:
    """``536870912`` → ``"512M"``: the largest unit that divides exactly, as job.json says it."""
    for unit in ("P", "T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


def _number_or_text(value: Any, example: str) -> float | str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number or a string such as {example!r}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value.strip() if isinstance(value, str) else value


def parse_size(value: Any) -> int:
    """Bytes from ``1048576`` or ``"512M"``; ValueError saying what is accepted."""
    raw = _number_or_text(value, "512M")
    if isinstance(raw, str):
        match = _SIZE.fullmatch(raw)
        if match is None:
            raise ValueError(f"must be a size such as '512M' or '2G', got {raw!r}")
        size = float(match.group(1)) * _UNITS[match.group(2).upper()]
    else:
        size = raw
    if size < MIN_MEMORY:
        raise ValueError(f"must be at least 1M, got {value!r}")
    if size > MAX_MEMORY:
        raise ValueError(f"must be at most 1P, got {value!r}")
    return int(size)


def parse_percent(value: Any) -> float:
    """``"150%"`` or ``150`` → 150.0 (percent of one CPU)."""
    raw = _number_or_text(value, "150%")
    if isinstance(raw, str):
        match = _PERCENT.fullmatch(raw)
        if match is None:
            raise ValueError(f"must be a percentage of one CPU such as '150%', got {raw!r}")
        raw = float(match.group(1))
    if not 1 <= raw <= 100_000:
        raise ValueError(f"must be between 1% and 100000% of one CPU, got {value!r}")
    return float(raw)


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"`` or ``"1d"``."""
    raw = _number_or_text(value, "10m")
    if isinstance(raw, str):
        match = _DURATION.fullmatch(raw)
        if match is None:
            raise ValueError(
                f"must be seconds, or a duration such as '90s', '10m' or '2h', got {raw!r}"
            )
        raw = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if raw <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    if raw > MAX_RUNTIME:
        raise ValueError(f"must be at most a year (31536000 s), got {value!r}")
    return float(raw)


class Limits(BaseModel):
    """Resource limits of a run; each one absent means "no limit" (or the settings' default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_max: int | None = None  # bytes
    cpu_quota: float | None = None  # percent of one CPU
    cpu_weight: StrictInt | None = None
    pids_max: StrictInt | None = None
    nice: StrictInt | None = None
    open_files: StrictInt | None = None
    max_runtime: float | None = None  # seconds

    @field_validator("memory_max", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("cpu_quota", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        return None if value is None else parse_percent(value)

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("cpu_weight")
    @classmethod
    def _weight(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 10_000:
            raise ValueError(f"must be between 1 and 10000 (100 is the default share), got {value}")
        return value

    @field_validator("pids_max")
    @classmethod
    def _pids(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (the job's own process), got {value}")
        if value is not None and value > MAX_PIDS:
            raise ValueError(f"must be at most {MAX_PIDS}, got {value}")
        return value

    @field_validator("nice")
    @classmethod
    def _nice(cls, value: int | None) -> int | None:
        if value is not None and not -20 <= value <= 19:
            raise ValueError(f"must be between -20 and 19, got {value}")
        return value

    @field_validator("open_files")
    @classmethod
    def _files(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_OPEN_FILES:
            raise ValueError(
                f"must be at least {MIN_OPEN_FILES} (interpreters need a few), got {value}"
            )
        if value is not None and value > MAX_OPEN_FILES:
            raise ValueError(f"must be at most {MAX_OPEN_FILES}, got {value}")
        return value

    def over(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` filling every field left unset."""
        mine = self.model_dump(exclude_none=True)
        return defaults.model_copy(update=mine) if mine else defaults

    def resources(self) -> ResourceLimits:
        """The plain value a launch spec carries (``max_runtime`` goes to its timeout)."""
        return ResourceLimits(
            memory_max_bytes=self.memory_max,
            cpu_quota_percent=self.cpu_quota,
            cpu_weight=self.cpu_weight,
            pids_max=self.pids_max,
            nice=self.nice,
            open_files=self.open_files,
        )


def runtime_problem(timeout_seconds: float | None, limits: Limits | None) -> str | None:
    """Why ``timeout_seconds`` and ``limits.max_runtime`` contradict each other, or None."""
    if limits is None or limits.max_runtime is None or timeout_seconds is None:
        return None
    if limits.max_runtime == timeout_seconds:
        return None
    return (
        f"limits.max_runtime ({limits.max_runtime:g} s) contradicts timeout_seconds "
        f"({timeout_seconds:g} s): both are the run's time limit; keep only one"
    )


class RunAsDefinition(BaseModel):
    """``run_as``: the Unix user (and group, umask) a job runs as; needs a root server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str
    group: str | None = None
    umask: str = "022"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"user": data} if isinstance(data, str) else data

    @field_validator("user", "group")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not _ACCOUNT.fullmatch(value):
            raise ValueError(
                "must be a Unix account name (letters, digits, '_', '.', '-', "
                f"at most 32 characters, not starting with a digit or '-'), got {value!r}"
            )
        return value

    @field_validator("umask", mode="before")
    @classmethod
    def _umask(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _UMASK.fullmatch(value):
            raise ValueError(f"must be an octal string such as '027', got {value!r}")
        return value

    def spec(self) -> RunAs:
        return RunAs(user=self.user, group=self.group, umask=int(self.umask, 8))


class AppSettings(NamedTuple):
    """What ``apps/<App>/app.json`` says for every job of the app (today: ``run_as``)."""

    run_as: RunAsDefinition | None
    errors: tuple[str, ...]  # each makes every job of the app invalid
    state: tuple[int, int, int, int] | None  # the file's identity, for rescans


class _AppJson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_as: RunAsDefinition | None = None


NO_APP_SETTINGS = AppSettings(None, (), None)


def load_app_json(path: str, display: str, state: tuple[int, int, int, int] | None) -> AppSettings:
    """Parse an app's app.json (absent: nothing); errors start with ``display``."""
    if state is None:
        return NO_APP_SETTINGS
    return _load_app_json(path, display, state)


@functools.lru_cache(maxsize=1024)
def _load_app_json(path: str, display: str, state: tuple[int, int, int, int]) -> AppSettings:
    # Memoised on the file's identity: a scan reads each app.json once, a rescan not at all.
    try:
        with open(path, "rb") as handle:
            raw = handle.read(1024 * 1024)
        data = json.loads(raw)
    except OSError as exc:
        return AppSettings(None, (f"{display}: cannot read it ({exc.strerror})",), state)
    except ValueError as exc:
        return AppSettings(None, (f"{display}: not valid JSON ({exc})",), state)
    if not isinstance(data, dict):
        return AppSettings(None, (f"{display}: must hold a JSON object",), state)
    try:
        parsed = _AppJson.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            reason = error.get("ctx", {}).get("error", error["msg"])
            if error["type"] == "extra_forbidden":
                reason = "is not a known app.json field (only run_as is)"
            messages.append(f"{display}: {loc} {reason}")
        return AppSettings(None, tuple(messages), state)
    return AppSettings(parsed.run_as, (), state)

"""job.json's triggers besides people and schedules, and a variable's dynamic choices:
``webhook`` (``jobhost.hooks``), ``watch`` (``jobhost.file_triggers``) and
``choices_from`` (``jobhost.execution.choices``). Pure models; ``definition`` uses them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_RATE = 100_000  # calls a minute: far above any sender, below a counter overflow
_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")
MAX_CHOICES_TIMEOUT = 60.0
MAX_CHOICES_CACHE = 24 * 3600.0
_STRICT_NUMBER: dict[str, Any] = {"strict": True, "allow_inf_nan": False}


def _inside_folder(value: str, folder: str = "the job folder") -> str:
    """A path relative to ``folder`` that cannot leave it (as ScriptRelativePath)."""
    if not value.strip():
        raise ValueError(f"must name a file in {folder}, got ''")
    if "\0" in value:
        raise ValueError(f"must not contain NUL, got {value!r}")
    if value.startswith(("/", "\\")) or _DRIVE.match(value):
        raise ValueError(f"must be relative to {folder}, got {value!r}")
    if ".." in _SEPARATORS.split(value):
        raise ValueError(f"must stay inside {folder}, got {value!r}")
    return value


class ChoicesFrom(BaseModel):
    """A variable's choices listed by a script in the job folder (no shell): it prints a
    JSON array, or one choice per line; run with a timeout, its output capped, its list
    cached for ``cache_seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    script: str
    timeout_seconds: float = Field(default=5.0, gt=0, le=MAX_CHOICES_TIMEOUT, **_STRICT_NUMBER)
    cache_seconds: float = Field(default=60.0, ge=0, le=MAX_CHOICES_CACHE, **_STRICT_NUMBER)

    @field_validator("script")
    @classmethod
    def _check_script(cls, value: str) -> str:
        return _inside_folder(value)


class WebhookDefinition(BaseModel):
    """``"webhook": {"enabled": true, "signature": "hmac-sha256", "rate_per_minute": 30}``:
    the job may get a secret URL that starts it (``jobhost.hooks``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, strict=True)
    signature: Literal["hmac-sha256"] | None = None  # None: the secret URL is enough
    rate_per_minute: int = Field(default=30, ge=1, le=MAX_RATE, strict=True)


_GLOB = re.compile(r"[*?\[]")


class WatchDefinition(BaseModel):
    """``"watch": {"path": "incoming/*.csv", "variable": "File", "debounce_seconds": 2}``:
    a file appearing or changing under the app's folder starts the job, its path in the
    variable (``jobhost.file_triggers``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str  # relative to the app folder (apps/<App>/); wildcards in the file name only
    variable: str = "File"
    debounce_seconds: float = Field(default=2.0, ge=0, le=3600.0, **_STRICT_NUMBER)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        value = _inside_folder(value, "the app folder").replace("\\", "/")
        folder, _, name = value.rpartition("/")
        if _GLOB.search(folder):
            raise ValueError(f"may have wildcards in the file name only, got {value!r}")
        if not name:
            raise ValueError(f"must end with a file name or pattern, got {value!r}")
        return value

    def problem(self, variables: Collection[str]) -> str | None:
        """Why the watch cannot fill its variable, or None."""
        if self.variable not in variables:
            return (
                f"watch.variable {self.variable!r} is not declared in template_variables; "
                "declare it (a string) to receive the file's path"
            )
        return None

"""Where the store is, for the verbs that only read it, without building ``Settings``.

``Settings`` validates every knob through pydantic-settings, whose import alone costs a
local ``jobhost history`` about a fifth of its time; a read needs two of those knobs.
They are looked up as ``Settings`` looks them up: the command-line option, else
``JOBHOST_DATA_DIR`` / ``JOBHOST_DATABASE_URL`` (any case), else ``jobhost.toml`` (or
``JOBHOST_CONFIG``). Anything this does not read the same way (a value of another type, a
file that does not parse) is left to ``Settings``, so its errors stay the same;
``tests/test_cli_location.py`` holds the two to the same answers.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoreLocation:
    """The part of ``Settings`` that ``make_store`` reads."""

    data_dir: Path
    database_url: str | None

    @property
    def db_url(self) -> str:
        """As ``Settings.db_url``: the configured URL, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobhost.db').resolve()}"


class Unusual(Exception):
    """A source this module does not read as ``Settings`` would: ask ``Settings``."""


KEYS = ("data_dir", "database_url")


def store_location(data_dir: Path | None, database_url: str | None) -> StoreLocation:
    """The store's location from the command-line options, the environment and the file;
    raises ``Unusual`` when only ``Settings`` can tell."""
    found: dict[str, Any] = {}
    for key, value in _config_file().items():
        if key.lower() in KEYS:
            if key not in KEYS:
                raise Unusual(f"{key} in the configuration file")
            found[key] = value
    environ = {name.lower(): value for name, value in os.environ.items()}  # as Settings
    for key in KEYS:
        if f"jobhost_{key}" in environ:
            found[key] = environ[f"jobhost_{key}"]
    if data_dir is not None:
        found["data_dir"] = data_dir
    if database_url is not None:
        found["database_url"] = database_url
    where, url = found.get("data_dir", ".data"), found.get("database_url")
    if not isinstance(where, str | Path) or not isinstance(url, str | None):
        raise Unusual("a store setting that is not text")
    return StoreLocation(data_dir=Path(where), database_url=url)


def _config_file() -> dict[str, Any]:
    """``jobhost.toml`` (or ``JOBHOST_CONFIG``) as ``Settings`` finds it; ``{}`` without one."""
    path = Path(os.environ.get("JOBHOST_CONFIG", "jobhost.toml")).expanduser()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, ValueError) as exc:
        raise Unusual(str(exc)) from exc

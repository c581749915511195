"""``Job``: one job folder as the catalog holds it, and what a rescan compares.

A plain immutable value; ``discovery`` builds these (and re-exports ``Job``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from jobhost.catalog.definition import JobDefinition
from jobhost.models import Action, Principal

# (st_ino, st_mtime_ns, st_ctime_ns, st_size): ctime also moves on chmod and on a
# rewrite that restores the mtime; the inode changes on an atomic replace.
FileState = tuple[int, int, int, int]
# A path and its state (None: absent) for each file a rescan must stat to see a change.
Watched = tuple[str, FileState | None]
Signature = tuple[Watched, ...]


class Job:
    """One job folder as discovered: valid (``definition`` set) or invalid (``errors``).

    Immutable. ``folder``, ``script`` and ``init_script`` are kept as text and made
    ``Path`` objects on access: a scan builds thousands of jobs and few of their
    paths are ever used, while parsing them was a quarter of the scan.
    """

    __slots__ = (
        "_folder",
        "_init_script",
        "_script",
        "app",
        "definition",
        "errors",
        "id",
        "name",
        "signature",
        "warnings",
    )
    id: str
    app: str
    name: str  # the folder name
    definition: JobDefinition | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    signature: Signature  # what a rescan stats to see whether the folder changed
    _folder: str
    _script: str | None
    _init_script: str | None

    def __init__(
        self,
        id: str,
        app: str,
        name: str,
        folder: Path | str,
        definition: JobDefinition | None,
        errors: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        script: Path | str | None = None,
        init_script: Path | str | None = None,
        signature: Signature = (),
    ) -> None:
        init = object.__setattr__
        init(self, "id", id)
        init(self, "app", app)
        init(self, "name", name)
        init(self, "_folder", os.fspath(folder))
        init(self, "definition", definition)
        init(self, "errors", errors)
        init(self, "warnings", warnings)
        init(self, "_script", None if script is None else os.fspath(script))
        init(self, "_init_script", None if init_script is None else os.fspath(init_script))
        init(self, "signature", signature)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Job is immutable; use Job.replace(...) to change {name!r}")

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, valid={self.valid}, errors={self.errors!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return all(getattr(self, slot) == getattr(other, slot) for slot in Job.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside the definition

    def replace(self, **changes: Any) -> Job:
        """A copy with the given fields (``definition``, ``errors``, ``warnings``…) changed."""
        fields = {slot.lstrip("_"): getattr(self, slot) for slot in Job.__slots__}
        return Job(**{**fields, **changes})

    @property
    def folder(self) -> Path:
        return Path(self._folder)

    @property
    def script(self) -> Path | None:
        """The script (inside ``folder``, not resolved); None when the job has none."""
        return None if self._script is None else Path(self._script)

    @property
    def init_script(self) -> Path | None:
        return None if self._init_script is None else Path(self._init_script)

    @property
    def valid(self) -> bool:
        return self.definition is not None and not self.errors

    def advice(self, channels: Collection[str] | None = None) -> list[str]:
        """What would go wrong at run time though job.json is valid: a schedule whose fires
        lack a required variable, and (given the configured ``channels``) a notify rule
        naming a channel this server does not have."""
        d = self.definition
        if d is None:
            return []
        found: list[str] = []
        if d.default_schedule:
            for spec in d.template_variables.values():
                if spec.required and not spec.has_default:
                    found.append(
                        f"default_schedule {d.default_schedule!r} fails at every fire: the "
                        f"required variable {spec.name} has no default; give it a default, or "
                        f"set it for the schedule (jobhost schedule set {self.id} "
                        f"--var {spec.name}=...)"
                    )
        if channels is not None:
            known = ", ".join(sorted(channels)) or "none"
            for index, rule in enumerate(d.notify):
                name = rule.get("channel")
                if isinstance(name, str) and name not in channels:
                    found.append(
                        f"notify[{index}] names the channel {name!r}, which this server does "
                        f"not configure (configured: {known}); add it under 'channels' in the "
                        "configuration, or fix the name"
                    )
        return found

    def to_api(self, principal: Principal | None = None) -> dict[str, Any]:
        """The catalog entry the API, CLI and UI show; secret defaults are never shown.

        An invalid job still shows what its job.json says (``declared``), next to its
        errors, so an operator can see what it would do."""
        d = self.definition
        variables = []
        for spec in d.template_variables.values() if d else ():
            variables.append(
                {
                    "name": spec.name,
                    "description": spec.description,
                    "type": spec.type,
                    "default": "***" if spec.secret and spec.has_default else spec.default,
                    "required": spec.required,
                    "pattern": spec.pattern,
                    "choices": spec.choices,
                    "min": spec.min_value,
                    "max": spec.max_value,
                    "secret": spec.secret,
                    "choices_from": spec.choices_from.model_dump() if spec.choices_from else None,
                }
            )
        entry: dict[str, Any] = {
            "id": self.id,
            "app": self.app,
            "job": self.name,
            "name": (d.Name if d and d.Name else self.name),
            "description": d.Description if d else "",
            "valid": self.valid,
            "errors": list(self.errors),
            "warnings": [*self.warnings, *self.advice()],
            "schedule": d.default_schedule if d else None,
            "variables": variables,
            "roles": {action.value: (d.roles_for(action) if d else None) for action in _ACTIONS},
            "timeout_seconds": d.timeout_seconds if d else None,
            "max_concurrent": d.max_concurrent if d else None,
            "on_conflict": d.on_conflict if d else None,
            "restart": d.restart if d else None,
            "enabled": d.enabled if d else False,
            "has_init_script": self.init_script is not None,
            "webhook": d.webhook.model_dump() if d and d.webhook else None,
            "extra_fields": dict(d.model_extra or {}) if d else {},
        }
        if d is None:
            declared = _declared(os.path.join(self._folder, "job.json"), self.signature)
            entry["declared"] = declared
            if declared is not None:
                entry["name"] = declared["name"] or self.name
                entry["description"] = declared["description"] or ""
                entry["schedule"] = declared["schedule"]
        if principal is not None:
            from jobhost.security import can  # security imports catalog.definition

            entry["permissions"] = {a.value: can(principal, self, a) for a in _ACTIONS}
        return entry


@functools.lru_cache(maxsize=256)
def _declared(path: str, signature: Signature) -> dict[str, Any] | None:
    """What an invalid job's job.json declares, read leniently (the fields of the seed form
    and the roles); None when the file is not a JSON object. Cached per file state."""
    del signature  # part of the cache key: a changed file is read again
    try:
        with open(path, encoding="utf-8-sig") as file:
            data = json.loads(file.read(1024 * 1024))
    except (OSError, ValueError, RecursionError):  # a hostile file (nested 100,000 deep)
        return None
    if not isinstance(data, dict):
        return None

    def text(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    variables = data.get("template_variables")
    declared_variables: list[dict[str, Any]] = []
    if isinstance(variables, dict):
        for name, spec in variables.items():
            info = spec if isinstance(spec, dict) else {"description": spec}
            declared_variables.append(
                {
                    "name": str(name),
                    "description": str(info.get("description") or ""),
                    "required": bool(info.get("required", "default" not in info)),
                    "secret": bool(info.get("secret", False)),
                }
            )
    roles = {
        action.value: data.get(f"roles_{action.value}")
        for action in _ACTIONS
        if isinstance(data.get(f"roles_{action.value}"), list)
    }
    return {
        "name": text("Name"),
        "description": text("Description"),
        "schedule": text("default_schedule"),
        "variables": declared_variables,
        "roles": roles,
    }


_ACTIONS = (Action.START, Action.STOP, Action.RESTART, Action.VIEW, Action.SCHEDULE)

"""Scanning apps roots into an immutable ``Catalog`` of ``Job`` values.

Layout: ``<root>/<App>/jobs/<Job>/job.json``. Every folder under ``jobs/`` is an
entry: a broken one is kept as an invalid ``Job`` with its errors, never dropped
and never raised; hidden folders and ``__pycache__`` are skipped.

The hot loop is written for 10,000 folders in well under a second: ``os.scandir``
and plain string paths, one ``os.open``/``os.read`` per job.json, and symlinks
resolved only when the script path is a link or goes through a sub-folder.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobhost.catalog.definition import (
    INIT_SCRIPT_NAMES,
    JobDefinition,
    command_for,
    id_part_problem,
    load_definition,
)
from jobhost.errors import InvalidDefinition, JobNotFound
from jobhost.models import Action, Principal

MAX_JOB_JSON_BYTES = 1024 * 1024
_SKIPPED = frozenset({"__pycache__"})

# (mtime_ns, size) of the folder, job.json, the script and the init script.
Signature = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class Job:
    """One job folder as discovered: valid (``definition`` set) or invalid (``errors``)."""

    id: str
    app: str
    name: str  # the folder name
    folder: Path
    definition: JobDefinition | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    script: Path | None = None
    init_script: Path | None = None
    signature: Signature = ()

    @property
    def valid(self) -> bool:
        return self.definition is not None and not self.errors

    def to_api(self, principal: Principal | None = None) -> dict[str, Any]:
        """The catalog entry the API, CLI and UI show; secret defaults are never shown."""
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
            "warnings": list(self.warnings),
            "schedule": d.default_schedule if d else None,
            "variables": variables,
            "roles": {action.value: (d.roles_for(action) if d else None) for action in _ACTIONS},
            "timeout_seconds": d.timeout_seconds if d else None,
            "max_concurrent": d.max_concurrent if d else None,
            "on_conflict": d.on_conflict if d else None,
            "restart": d.restart if d else None,
            "enabled": d.enabled if d else False,
            "has_init_script": self.init_script is not None,
            "extra_fields": dict(d.model_extra or {}) if d else {},
        }
        if principal is not None:
            from jobhost.security import can  # security imports catalog.definition

            entry["permissions"] = {a.value: can(principal, self, a) for a in _ACTIONS}
        return entry


_ACTIONS = (Action.START, Action.STOP, Action.RESTART, Action.VIEW, Action.SCHEDULE)


class Catalog(Mapping[str, Job]):
    """An immutable snapshot: job ID → Job, iterated in ID order.

    ``shadowed`` holds folders whose ID another root already provides; they are
    listed by ``invalid()`` but are not reachable by ID.
    """

    __slots__ = ("_by_folder", "_jobs", "shadowed")

    def __init__(
        self,
        jobs: Iterable[Job] = (),
        shadowed: Iterable[Job] = (),
        *,
        by_folder: Mapping[str, Job] | None = None,
    ) -> None:
        self._jobs = {job.id: job for job in sorted(jobs, key=lambda j: j.id)}
        self.shadowed: tuple[Job, ...] = tuple(shadowed)
        # Jobs as parsed, before duplicate handling: what ``rescan`` reuses.
        self._by_folder: dict[str, Job] = dict(by_folder or {})

    def __getitem__(self, job_id: str) -> Job:
        return self._jobs[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return f"Catalog({len(self._jobs)} jobs, {len(self.invalid())} invalid)"

    def require(self, job_id: str) -> Job:
        """The job, or JobNotFound."""
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"No job {job_id!r} in the catalog")
        return job

    def valid(self) -> list[Job]:
        return [job for job in self._jobs.values() if job.valid]

    def invalid(self) -> list[Job]:
        """Invalid jobs, then folders shadowed by a duplicate ID."""
        return [job for job in self._jobs.values() if not job.valid] + list(self.shadowed)


@dataclass(frozen=True, slots=True)
class _Folder:
    app: str
    name: str
    path: str
    display: str  # e.g. "apps/Backup/jobs/Nightly"
    ancestors: tuple[str, str, str]  # root, app folder, jobs folder


def _scandir_dirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(
                (e for e in entries if e.name[0] != "." and e.name not in _SKIPPED and e.is_dir()),
                key=lambda e: e.name,
            )
    except OSError:
        return []


def _walk(roots: Sequence[Path]) -> Iterator[_Folder]:
    for root in roots:
        root_path = os.path.abspath(root)
        label = os.path.basename(root_path)
        for app in _scandir_dirs(root_path):
            jobs_dir = app.path + os.sep + "jobs"
            for job in _scandir_dirs(jobs_dir):
                yield _Folder(
                    app=app.name,
                    name=job.name,
                    path=job.path,
                    display=f"{label}/{app.name}/jobs/{job.name}",
                    ancestors=(root_path, app.path, jobs_dir),
                )


def _stat_pair(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _signature(folder: str, script: Path | None, init: Path | None) -> Signature:
    return (
        _stat_pair(folder),
        _stat_pair(folder + os.sep + "job.json"),
        _stat_pair(str(script) if script else None),
        _stat_pair(str(init) if init else None),
    )


def _read_json(path: str, display: str) -> tuple[Any, str | None, tuple[int, int] | None]:
    """(parsed job.json, None, its signature) or (None, the error message, signature)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, f"{display}: job.json is missing; every job folder needs one", None
    except OSError as exc:
        return None, f"{display}: cannot read job.json ({exc.strerror})", None
    try:
        st = os.fstat(fd)
        sig = (st.st_mtime_ns, st.st_size)
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_JOB_JSON_BYTES:
                return None, f"{display}/job.json: larger than {MAX_JOB_JSON_BYTES} bytes", sig
    except OSError as exc:
        return None, f"{display}: cannot read job.json ({exc.strerror})", None
    finally:
        os.close(fd)
    try:
        return json.loads(b"".join(chunks)), None, sig
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return None, f"{display}/job.json: not valid JSON: {exc.msg} at {where}", sig
    except UnicodeDecodeError:
        return None, f"{display}/job.json: not valid UTF-8 text", sig


def _script_problem(
    folder: str, relative: str
) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """(path, None, signature) if a file inside ``folder`` (after symlinks), else (None, why, _)."""
    path = os.path.join(folder, relative)
    try:
        st = os.lstat(path)
    except OSError:
        return None, f"ScriptRelativePath {relative!r} does not exist in the job folder", None
    # Only a link, or a path through sub-folders (which may be links), needs resolving.
    if stat.S_ISLNK(st.st_mode) or "/" in relative or "\\" in relative:
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(folder) + os.sep):
            return None, f"ScriptRelativePath {relative!r} resolves outside the job folder", None
        try:
            st = os.stat(real)
        except OSError:
            return None, f"ScriptRelativePath {relative!r} is a broken link", None
    if not stat.S_ISREG(st.st_mode):
        return None, f"ScriptRelativePath {relative!r} is not a file", None
    return path, None, (st.st_mtime_ns, st.st_size)


def _runnable_problem(path: str) -> str | None:
    if path.endswith((".py", ".sh")):  # the common case, without building a Path
        return None
    try:
        command_for(Path(path))
    except InvalidDefinition as exc:
        return exc.message
    return None


def _load(folder: _Folder) -> Job:
    """Parse and check one job folder; never raises."""
    # Stat before reading, so a write racing this read shows up as a change next time.
    folder_sig = _stat_pair(folder.path)
    errors: list[str] = []
    for part in (folder.app, folder.name):
        if (problem := id_part_problem(part)) is not None:
            errors.append(f"{folder.display}: folder name {part!r} {problem}")
    source = folder.display + "/job.json"
    data, read_error, json_sig = _read_json(folder.path + os.sep + "job.json", folder.display)
    definition: JobDefinition | None = None
    warnings: list[str] = []
    if read_error is not None:
        errors.append(read_error)
    else:
        definition, def_errors, warnings = load_definition(data, source)
        errors += def_errors
    script: str | None = None
    script_sig: tuple[int, int] | None = None
    relative = data.get("ScriptRelativePath") if isinstance(data, dict) else None
    if (
        isinstance(relative, str)
        and relative.strip()
        and not any("ScriptRelativePath" in e for e in errors)
    ):
        script, problem, script_sig = _script_problem(folder.path, relative)
        problem = problem or _runnable_problem(script or "")
        if problem is not None:
            errors.append(f"{source}: {problem}")
    init = _find_init(folder.path)
    if init is not None and (problem := _runnable_problem(init)) is not None:
        errors.append(f"{folder.display}: {problem}")
    return Job(
        id=f"{folder.app}/{folder.name}",
        app=folder.app,
        name=folder.name,
        folder=Path(folder.path),
        definition=definition if not errors else None,
        errors=tuple(errors),
        warnings=tuple(warnings),
        script=Path(script) if script else None,
        init_script=Path(init) if init else None,
        signature=(folder_sig, json_sig, script_sig, _stat_pair(init)),
    )


def _find_init(folder: str) -> str | None:
    """The first init script present (one directory listing, not a stat per name)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    for candidate in INIT_SCRIPT_NAMES:
        if candidate in names:
            path = folder + os.sep + candidate
            if os.path.isfile(path):
                return path
    return None


def _assemble(jobs: list[tuple[_Folder, Job]]) -> Catalog:
    """Resolve duplicate IDs (the first root wins) into a Catalog."""
    winners: dict[str, tuple[_Folder, Job]] = {}
    shadowed: list[Job] = []
    for folder, job in jobs:
        first = winners.get(job.id)
        if first is None:
            winners[job.id] = (folder, job)
            continue
        message = (
            f"{folder.display}: job ID {job.id!r} is already defined by {first[0].display}; "
            "this folder is ignored (rename one of them)"
        )
        shadowed.append(replace(job, definition=None, errors=(*job.errors, message)))
        first_job = winners[job.id][1]
        note = (
            f"{first[0].display}: job ID {job.id!r} is also defined by {folder.display}, "
            "which is ignored"
        )
        winners[job.id] = (first[0], replace(first_job, warnings=(*first_job.warnings, note)))
    return Catalog(
        (job for _, job in winners.values()),
        shadowed,
        by_folder={folder.path: job for folder, job in jobs},
    )


def scan(roots: Sequence[Path]) -> Catalog:
    """Discover every job folder under ``roots``; earlier roots win on duplicate IDs."""
    return _assemble([(folder, _load(folder)) for folder in _walk(roots)])


def _changed_set(changed: Iterable[Path]) -> tuple[set[str], set[str]]:
    """(the changed paths, every ancestor of them) as absolute strings."""
    exact: set[str] = set()
    touched: set[str] = set()
    for path in changed:
        text = os.path.abspath(path)
        exact.add(text)
        while text not in touched:
            touched.add(text)
            parent = os.path.dirname(text)
            if parent == text:
                break
            text = parent
    return exact, touched


def rescan(
    previous: Catalog, roots: Sequence[Path], changed: Iterable[Path] | None = None
) -> Catalog:
    """An updated catalog, re-parsing only folders whose files changed.

    With ``changed`` (e.g. from a file watcher) only folders at, under or above those
    paths are examined; without it every folder's signature is compared. Returns
    ``previous`` itself when nothing changed.
    """
    exact, touched = _changed_set(changed) if changed is not None else (set(), set())
    old = previous._by_folder
    jobs: list[tuple[_Folder, Job]] = []
    differs = False
    for folder in _walk(roots):
        before = old.get(folder.path)
        if before is not None:
            suspect = (
                changed is None or folder.path in touched or not exact.isdisjoint(folder.ancestors)
            )
            if not suspect or before.signature == _signature(
                folder.path, before.script, before.init_script
            ):
                jobs.append((folder, before))
                continue
        differs = True
        jobs.append((folder, _load(folder)))
    if not differs and len(jobs) == len(old):
        return previous
    return _assemble(jobs)

"""Scanning apps roots into an immutable ``Catalog`` of ``Job`` values.

Layout: ``<root>/<App>/jobs/<Job>/job.json``. Every folder under ``jobs/`` is an
entry: a broken one is kept as an invalid ``Job`` with its errors, never dropped
and never raised; hidden folders and ``__pycache__`` are skipped.

The hot loop is written for 10,000 folders (``python -m bench.bench_catalog``):
per folder one ``stat``, one listing (which answers "is the script a plain file
here?" and "is there an init script?" without a syscall each), and ``open``,
``fstat``, one ``read``, ``close`` of job.json; validation straight from the bytes
(``load_definition_json``), memoised on those bytes; paths kept as text. Measured
and rejected: a process pool (pickling the validated models back costs more than
the second core saves) and pausing the cyclic collector (6% for a global side effect).

A no-change ``rescan`` only stats: the folder (its times move when an entry is
added, removed or renamed), job.json, and a script or init script only when the
folder's times cannot show its change (a link, a sub-folder, an exec bit).
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from jobhost.catalog.chaingraph import refuse_cycles
from jobhost.catalog.definition import (
    INIT_SCRIPT_NAMES,
    JobDefinition,
    command_for,
    id_part_problem,
    load_definition,
    load_definition_json,
)
from jobhost.catalog.entry import FileState, Job, Watched
from jobhost.catalog.limits import AppSettings, load_app_json
from jobhost.errors import InvalidDefinition, JobNotFound

__all__ = [
    "MAX_JOB_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "Catalog",
    "Job",
    "json_limits_problem",
    "parse_job_json",
    "rescan",
    "scan",
]

# Checked on the bytes before any parser sees them: a hostile job.json (nested 100,000
# deep, a 5,000-digit integer) makes its own job invalid and nothing else.
MAX_JOB_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 100
_LONG_NUMBER = re.compile(rb"[-+0-9.eE]{%d,}" % (MAX_NUMBER_CHARS + 1))
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]|[-+0-9.eE]+')
_SKIPPED = frozenset({"__pycache__"})

# A parse is memoised for files up to this size, for up to this many distinct files.
_CACHED_BYTES = 64 * 1024
_PARSE_CACHE_SIZE = 16_384


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
    ancestors: tuple[str, str, str, str]  # root, app folder, jobs folder, app.json
    app_settings: AppSettings  # what apps/<App>/app.json says for all its jobs


class _Parsed(NamedTuple):
    """What a job.json's bytes say, before the folder's files are checked."""

    definition: JobDefinition | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    script: str | None  # ScriptRelativePath when it is a non-blank string


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
            app_json = app.path + os.sep + "app.json"
            app_settings = load_app_json(app_json, f"{label}/{app.name}/app.json", _state(app_json))
            for job in _scandir_dirs(jobs_dir):
                yield _Folder(
                    app=app.name,
                    name=job.name,
                    path=job.path,
                    display=f"{label}/{app.name}/jobs/{job.name}",
                    ancestors=(root_path, app.path, jobs_dir, app_json),
                    app_settings=app_settings,
                )


def _state(path: str) -> FileState | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _entries(folder: str) -> dict[str, os.DirEntry[str]]:
    """The folder's entries by name: one listing answers "is there a script, an init script"."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name: entry for entry in entries}
    except OSError:
        return {}


def _read_job_json(path: str, display: str) -> tuple[bytes | str, Watched | None]:
    """(the bytes or the error message, what a rescan must stat)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return f"{display}: job.json is missing; every job folder needs one", None
    except OSError as exc:
        return f"{display}: cannot read job.json ({exc.strerror})", None
    try:
        st = os.fstat(fd)
        watched = (path, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        # One read for a regular file (a short read is its end); a file that grew since
        # the fstat, or a pipe, is read on in chunks up to the cap.
        want = min(st.st_size, MAX_JOB_JSON_BYTES) + 1
        raw = os.read(fd, want)
        if len(raw) == want:
            chunks = [raw]
            total = len(raw)
            while total <= MAX_JOB_JSON_BYTES and (chunk := os.read(fd, 65536)):
                chunks.append(chunk)
                total += len(chunk)
            raw = b"".join(chunks)
        if len(raw) > MAX_JOB_JSON_BYTES:
            return f"{display}/job.json: larger than {MAX_JOB_JSON_BYTES} bytes", watched
    except OSError as exc:
        return f"{display}: cannot read job.json ({exc.strerror})", None
    finally:
        os.close(fd)
    return raw, watched


def json_limits_problem(raw: bytes) -> str | None:
    """Why ``raw`` is refused before parsing (too deep, a number too long), or None.

    Linear in the size, without recursion. Most files have few brackets and short
    numbers, which two C-speed scans show; only the rest are tokenised.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH and not _LONG_NUMBER.search(raw):
        return None
    depth = 0
    for match in _JSON_TOKENS.finditer(raw):
        token = match.group()
        first = token[:1]
        if first == b'"':
            continue
        if first in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return (
                    f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects "
                    f"(at byte {match.start()}); no job.json field needs that"
                )
        elif first in (b"]", b"}"):
            depth -= 1
        elif len(token) > MAX_NUMBER_CHARS:
            return (
                f"holds a number written with {len(token)} characters (at byte "
                f"{match.start()}); numbers in job.json are limited to {MAX_NUMBER_CHARS}"
            )
    return None


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_job_json(raw: bytes, display: str) -> _Parsed:
    """Decode and validate one job.json's bytes; ``display`` is its folder as shown.

    Pure, so it is memoised on the bytes themselves (not on file times, which a quick
    rewrite can leave unchanged): a repeated ``scan`` in one process reads each file
    but validates only what changed. ``parse_job_json.cache_clear()`` forgets.
    """
    source = display + "/job.json"
    if (limit := json_limits_problem(raw)) is not None:
        return _Parsed(None, (f"{source}: {limit}",), (), None)
    valid = load_definition_json(raw, source)
    if valid is not None and (definition := valid[0]) is not None:  # the common case
        return _Parsed(definition, (), tuple(valid[2]), definition.ScriptRelativePath)
    # Invalid: decode again for the JSON error's line and column, or every field's problem.
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return _Parsed(None, (f"{source}: not valid JSON: {exc.msg} at {where}",), (), None)
    except UnicodeDecodeError:
        return _Parsed(None, (f"{source}: not valid UTF-8 text",), (), None)
    except (RecursionError, ValueError) as exc:  # past the limits above: never expected
        return _Parsed(None, (f"{source}: cannot be parsed ({type(exc).__name__})",), (), None)
    definition, errors, warnings = load_definition(data, source)
    script = data.get("ScriptRelativePath") if isinstance(data, dict) else None
    script = script if isinstance(script, str) and script.strip() else None
    return _Parsed(definition, tuple(errors), tuple(warnings), script)


def _parse(raw: bytes, display: str) -> _Parsed:
    if len(raw) > _CACHED_BYTES:  # a rare huge file is not worth its memory in the cache
        return parse_job_json.__wrapped__(raw, display)
    return parse_job_json(raw, display)


def _script_problem(folder: str, relative: str) -> tuple[str | None, str | None]:
    """(path, None) if a file inside ``folder`` (after symlinks), else (None, why)."""
    path = os.path.join(folder, relative)
    try:
        st = os.lstat(path)
    except OSError:
        return None, f"ScriptRelativePath {relative!r} does not exist in the job folder"
    # Only a link, or a path through sub-folders (which may be links), needs resolving.
    if stat.S_ISLNK(st.st_mode) or "/" in relative or "\\" in relative:
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(folder) + os.sep):
            return None, f"ScriptRelativePath {relative!r} resolves outside the job folder"
        try:
            st = os.stat(real)
        except OSError:
            return None, f"ScriptRelativePath {relative!r} is a broken link"
    if not stat.S_ISREG(st.st_mode):
        return None, f"ScriptRelativePath {relative!r} is not a file"
    return path, None


def _check_script(
    folder: str, relative: str, entries: Mapping[str, os.DirEntry[str]], watched: list[Watched]
) -> tuple[str | None, str | None]:
    """(path, None) or (None, why); appends what a rescan must stat besides the folder."""
    entry = entries.get(relative)
    # The common case, answered by the listing alone: a plain file right in the folder,
    # whose creation, removal or renaming changes the folder's own times.
    if entry is not None and entry.is_file(follow_symlinks=False):
        found = entry.path
        if not found.endswith((".py", ".sh")):
            watched.append((found, _state(found)))  # chmod +x changes only the file's ctime
        return found, _runnable_problem(found)
    path, problem = _script_problem(folder, relative)
    target = path or os.path.join(folder, relative)
    watched.append((target, _state(target)))  # a link's target or a sub-folder may change
    return path, problem or _runnable_problem(path or "")


def _runnable_problem(path: str) -> str | None:
    if path.endswith((".py", ".sh")):  # the common case, without building a Path
        return None
    try:
        command_for(Path(path))
    except InvalidDefinition as exc:
        return exc.message
    return None


def _find_init(entries: Mapping[str, os.DirEntry[str]], watched: list[Watched]) -> str | None:
    """The first init script present, from the folder's listing."""
    for candidate in INIT_SCRIPT_NAMES:
        entry = entries.get(candidate)
        if entry is not None and entry.is_file():  # a stat only when it is a link
            if entry.is_symlink():
                watched.append((entry.path, _state(entry.path)))  # its target may go
            return entry.path
    return None


def _load(folder: _Folder) -> Job:
    """Parse and check one job folder; never raises."""
    # Stat before reading, so a write racing this read shows up as a change next time.
    watched: list[Watched] = [(folder.path, _state(folder.path))]
    entries = _entries(folder.path)
    errors: list[str] = []
    for part in (folder.app, folder.name):
        if (problem := id_part_problem(part)) is not None:
            errors.append(f"{folder.display}: folder name {part!r} {problem}")
    content, json_watched = _read_job_json(folder.path + os.sep + "job.json", folder.display)
    if json_watched is not None:
        watched.append(json_watched)
    if isinstance(content, str):
        parsed = _Parsed(None, (content,), (), None)
    else:
        parsed = _parse(content, folder.display)
    errors += parsed.errors
    script: str | None = None
    relative = parsed.script
    if relative is not None and not any("ScriptRelativePath" in e for e in errors):
        script, problem = _check_script(folder.path, relative, entries, watched)
        if problem is not None:
            errors.append(f"{folder.display}/job.json: {problem}")
    init = _find_init(entries, watched)
    if init is not None and (problem := _runnable_problem(init)) is not None:
        errors.append(f"{folder.display}: {problem}")
    app = folder.app_settings
    watched.append((folder.ancestors[3], app.state))
    errors += app.errors
    definition = parsed.definition if not errors else None
    if definition is not None and definition.run_as is None and app.run_as is not None:
        definition = definition.model_copy(update={"run_as": app.run_as})
    return Job(
        id=f"{folder.app}/{folder.name}",
        app=folder.app,
        name=folder.name,
        folder=folder.path,
        definition=definition,
        errors=tuple(errors),
        warnings=parsed.warnings,
        script=script,
        init_script=init,
        signature=tuple(watched),
    )


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
        shadowed.append(job.replace(definition=None, errors=(*job.errors, message)))
        first_job = winners[job.id][1]
        note = (
            f"{first[0].display}: job ID {job.id!r} is also defined by {folder.display}, "
            "which is ignored"
        )
        winners[job.id] = (first[0], first_job.replace(warnings=(*first_job.warnings, note)))
    return Catalog(
        refuse_cycles(
            {job_id: job for job_id, (_, job) in winners.items()},
            {job_id: f"{folder.display}/job.json" for job_id, (folder, _) in winners.items()},
        ).values(),
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
            if not suspect or all(_state(path) == state for path, state in before.signature):
                jobs.append((folder, before))
                continue
        differs = True
        jobs.append((folder, _load(folder)))
    if not differs and len(jobs) == len(old):
        return previous
    return _assemble(jobs)

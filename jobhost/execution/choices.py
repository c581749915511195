"""Dynamic choices: a variable whose allowed values a script lists (``choices_from``).

``"choices_from": {"script": "list-sites.py", "timeout_seconds": 5, "cache_seconds": 60}``
runs ``list-sites.py`` from the job folder, as init scripts run: no shell, its own
process group, watched on the loop (no thread, nothing blocks it), killed at the
timeout, its output capped. It prints a JSON array, or one choice per line; each is
checked against the variable's type and rules. The list is kept ``cache_seconds`` per
job snapshot (a catalog reload lists again), and callers asking at the same time share
one run.

The catalog detail shows the list (the start form makes it a select) and every start
checks the value against the same list. When the list cannot be made (the script fails,
times out, prints nonsense), the variable cannot be checked, so a start is refused with
the reason (422): failing closed, as a static ``choices`` would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobhost.catalog.definition import JobDefinition, VariableSpec, command_for, to_text
from jobhost.catalog.discovery import Job
from jobhost.errors import InvalidDefinition, VariableError
from jobhost.execution.init_hook import run_bounded
from jobhost.execution.launch import base_env

MAX_CHOICES = 1000


class ChoicesUnavailable(Exception):
    """The script could not list the choices; the message says why."""


@dataclass
class _Listed:
    job: Job  # the snapshot listed for: a reload makes a new Job
    expires: float
    choices: list[Any] | None
    error: str | None


class ChoiceLists:
    """Lists, caches and applies the ``choices_from`` of every job's variables."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cache: dict[tuple[str, str], _Listed] = {}
        self._running: dict[tuple[str, str], asyncio.Future[_Listed]] = {}

    async def listed(self, job: Job, spec: VariableSpec) -> tuple[list[Any] | None, str | None]:
        """(the choices, None) or (None, why they could not be listed)."""
        assert spec.choices_from is not None
        key = (job.id, spec.name)
        cached = self._cache.get(key)
        if cached is not None and cached.job is job and cached.expires > self._clock():
            return cached.choices, cached.error
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._list(job, spec))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        listed = await asyncio.shield(running)
        return listed.choices, listed.error

    async def _list(self, job: Job, spec: VariableSpec) -> _Listed:
        source = spec.choices_from
        assert source is not None
        try:
            choices: list[Any] | None = await _run(job, spec)
            error = None
        except ChoicesUnavailable as exc:
            choices, error = None, f"{spec.name}: its choices could not be listed: {exc}"
        # A failure is kept for a short while only, so a fixed script is seen soon.
        keep = source.cache_seconds if error is None else min(source.cache_seconds, 5.0)
        listed = _Listed(job, self._clock() + keep, choices, error)
        self._cache[(job.id, spec.name)] = listed
        return listed

    async def definition(self, job: Job) -> JobDefinition:
        """The job's definition with each ``choices_from`` replaced by its current list;
        VariableError naming the variable when a list cannot be made."""
        definition = job.definition
        assert definition is not None
        dynamic = [s for s in definition.template_variables.values() if s.choices_from]
        if not dynamic:
            return definition
        specs = dict(definition.template_variables)
        problems: dict[str, str] = {}
        for spec in dynamic:
            choices, error = await self.listed(job, spec)
            if error is not None:
                problems[spec.name] = error
            else:
                specs[spec.name] = spec.model_copy(update={"choices": choices})
        if problems:
            raise VariableError(
                f"Variables rejected: {'; '.join(problems.values())}", details=problems
            )
        return definition.model_copy(update={"template_variables": specs})

    async def for_api(self, job: Job, variables: list[dict[str, Any]]) -> None:
        """Fill the catalog entry's variables with their listed choices (or the error)."""
        definition = job.definition
        if definition is None:
            return
        for entry in variables:
            spec = definition.template_variables.get(entry["name"])
            if spec is None or spec.choices_from is None:
                continue
            choices, error = await self.listed(job, spec)
            entry["choices"] = choices
            entry["choices_error"] = error


async def _run(job: Job, spec: VariableSpec) -> list[Any]:
    source = spec.choices_from
    assert source is not None
    script = job.folder / source.script
    if not script.is_file():
        raise ChoicesUnavailable(f"{source.script} is not a file in the job folder")
    try:
        argv = command_for(script)
    except InvalidDefinition as exc:
        raise ChoicesUnavailable(exc.message) from None
    env = {**base_env(), "JOBHOST_JOB_ID": job.id, "JOBHOST_VARIABLE": spec.name}
    try:
        code, stdout, cut, stderr = await run_bounded(
            argv, str(job.folder), env, timeout=source.timeout_seconds
        )
    except TimeoutError:
        raise ChoicesUnavailable(
            f"{source.script} did not finish within {source.timeout_seconds:g} s"
        ) from None
    except OSError as exc:
        raise ChoicesUnavailable(f"{source.script} could not be started: {exc}") from None
    if code != 0:
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
        last = next((line for line in reversed(lines) if line), None)
        raise ChoicesUnavailable(last or f"{source.script} exited with code {code}")
    if cut:
        raise ChoicesUnavailable(f"{source.script} printed more than the output cap")
    return _parse(source.script, stdout.decode("utf-8", "replace"), spec)


def _parse(name: str, text: str, spec: VariableSpec) -> list[Any]:
    stripped = text.strip()
    raw: list[Any]
    if stripped.startswith("["):
        try:
            decoded = json.loads(stripped)
        except ValueError as exc:
            raise ChoicesUnavailable(f"{name} printed an invalid JSON array ({exc})") from None
        if not isinstance(decoded, list):
            raise ChoicesUnavailable(f"{name} must print a JSON array or one choice per line")
        raw = decoded
    else:
        raw = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not raw:
        raise ChoicesUnavailable(f"{name} listed no choices, so no value could pass")
    if len(raw) > MAX_CHOICES:
        raise ChoicesUnavailable(f"{name} listed {len(raw)} choices; at most {MAX_CHOICES}")
    choices = []
    for value in raw:
        try:
            choices.append(spec.check(value, in_choices=False))
        except ValueError as exc:
            raise ChoicesUnavailable(
                f"{name} listed {to_text(value)!r}, which is not a valid {spec.name}: {exc}"
            ) from None
    return choices

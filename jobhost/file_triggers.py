"""File triggers: ``"watch": {"path": "incoming/*.csv"}`` starts the job when a matching
file appears or changes in its app's folder, with the file's absolute path in a variable.

- One ``watchfiles`` watcher (inotify) over every watched folder, restarted when the
  catalog changes; no polling.
- Debounced per file: a file still being written (several events) starts one run,
  ``debounce_seconds`` after its last change. A deleted file starts nothing.
- The path is resolved and must stay inside the app's folder (a symlink pointing out
  is ignored), so no job is started on a file outside the folder its job.json names.
- The run's trigger is ``watch``, its user ``watch`` (the job's own declaration
  started it, like a schedule); it obeys ``max_concurrent``/``on_conflict`` as any
  start. A path its variable's rules refuse, or an init script's no, is a ``rejected``
  run in history with the reason, as for a schedule's fire; any other refusal (a
  conflict, a drain) is logged and audited as ``watch.fire``.
- Only a server that runs the scheduler runs file triggers: with several servers on
  one apps root, give ``scheduler_enabled = true`` to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from watchfiles import Change, awatch

from jobhost.catalog.discovery import Catalog
from jobhost.errors import JobHostError
from jobhost.models import Principal, Trigger

if TYPE_CHECKING:
    from jobhost.engine import JobHost

log = logging.getLogger(__name__)

WATCHER = Principal(username="watch", roles=frozenset(), superuser=True)


@dataclass(frozen=True, slots=True)
class Watch:
    """One job's watch, resolved: the folder, the file-name pattern, and its rules."""

    job_id: str
    app_folder: str
    folder: str
    pattern: str
    variable: str
    debounce: float


def watches(catalog: Catalog) -> list[Watch]:
    """The valid, enabled jobs' watches whose folders exist."""
    found = []
    for job in catalog.values():
        definition = job.definition
        if definition is None or not job.valid or definition.watch is None:
            continue
        if not definition.enabled:
            continue
        app_folder = os.path.realpath(job.folder.parent.parent)
        relative, _, pattern = definition.watch.path.rpartition("/")
        folder = os.path.realpath(os.path.join(app_folder, relative))
        if not (folder == app_folder or folder.startswith(app_folder + os.sep)):
            log.warning("watch of %s leaves its app folder; not watched", job.id)
            continue
        if not os.path.isdir(folder):
            log.warning("watch of %s: %s does not exist; not watched", job.id, folder)
            continue
        found.append(
            Watch(
                job.id,
                app_folder,
                folder,
                pattern,
                definition.watch.variable,
                definition.watch.debounce_seconds,
            )
        )
    return found


class FileTriggers:
    """Watches the folders of every job with ``watch`` and starts them (module docstring)."""

    def __init__(self, engine: JobHost) -> None:
        self.engine = engine
        self._watches: list[Watch] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._starts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.engine.on_catalog_change(self._catalog_changed)
        self._restart(self.engine.catalog)

    def _catalog_changed(self, catalog: Catalog) -> None:
        if watches(catalog) != self._watches:
            self._restart(catalog)

    def _restart(self, catalog: Catalog) -> None:
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
        self._stop = asyncio.Event()
        self._watches = watches(catalog)
        self._task = None
        if self._watches:
            folders = sorted({w.folder for w in self._watches})
            self._task = asyncio.create_task(self._run(folders, self._stop), name="jobhost-watch")

    async def _run(self, folders: list[str], stop: asyncio.Event) -> None:
        try:
            async for changes in awatch(*folders, stop_event=stop, recursive=False):
                for change, path in changes:
                    if change is not Change.deleted:
                        self._changed(path)
        except Exception:  # a vanished folder: log it; the next catalog change restarts
            log.exception("watching %s failed", folders)

    def _changed(self, path: str) -> None:
        folder, name = os.path.split(path)
        for watch in self._watches:
            if os.path.realpath(folder) != watch.folder:
                continue
            if not fnmatch.fnmatchcase(name, watch.pattern):
                continue
            key = (watch.job_id, path)
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._timers[key] = asyncio.get_running_loop().call_later(
                watch.debounce, self._fire, watch, path
            )

    def _fire(self, watch: Watch, path: str) -> None:
        self._timers.pop((watch.job_id, path), None)
        task = asyncio.get_running_loop().create_task(self._start(watch, path))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _start(self, watch: Watch, path: str) -> None:
        real = os.path.realpath(path)
        if not real.startswith(watch.app_folder + os.sep) or not os.path.isfile(real):
            return  # gone meanwhile, or a link pointing out of the app folder
        try:
            await self.engine.start(
                watch.job_id, {watch.variable: real}, WATCHER, trigger=Trigger.WATCH
            )
        except JobHostError as exc:
            log.warning("file trigger of %s for %s refused: %s", watch.job_id, real, exc.message)
            await self.engine.audit(
                "watch.fire",
                WATCHER,
                watch.job_id,
                outcome="failed",
                details={"path": real, "reason": exc.message},
            )

    async def aclose(self) -> None:
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._starts):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

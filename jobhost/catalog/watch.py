"""Hot reload: watch the apps roots and publish a new ``Catalog`` when job folders change."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from watchfiles import awatch

from jobhost.catalog.discovery import Catalog, rescan

log = logging.getLogger(__name__)


def _under_roots(paths: list[Path], roots: list[str]) -> bool:
    prefixes = [root.rstrip(os.sep) + os.sep for root in roots]
    return all(os.path.abspath(p).startswith(tuple(prefixes)) for p in paths)


async def watch_catalog(
    roots: Sequence[Path],
    get_catalog: Callable[[], Catalog],
    on_change: Callable[[Catalog], None],
    stop_event: asyncio.Event | None = None,
    *,
    debounce_ms: int = 300,
) -> None:
    """Until ``stop_event`` is set, call ``on_change(new)`` after each effective change.

    Changes are debounced (an editor's save is several events); only the folders
    they touch are re-parsed. Roots that do not exist when this starts are not
    watched; with none to watch it waits for ``stop_event`` (or returns without one).
    """
    watched = [os.path.abspath(root) for root in roots if os.path.isdir(root)]
    if not watched:
        log.warning("no apps root exists among %s; job folders are not watched", list(roots))
        if stop_event is not None:
            await stop_event.wait()
        return
    async for changes in awatch(*watched, stop_event=stop_event, debounce=debounce_ms):
        paths = [Path(path) for _, path in changes]
        previous = get_catalog()
        # Paths outside the roots as we spelled them (a symlinked root, say) cannot be
        # mapped to folders: compare every folder's signature instead.
        hint = paths if _under_roots(paths, watched) else None
        try:
            current = await asyncio.to_thread(rescan, previous, roots, hint)
        except Exception:  # one bad folder or a vanished file must not end the watching
            log.exception("rescan of %s failed; keeping the previous catalog", watched)
            continue
        if current is not previous:
            on_change(current)

"""This process's instance row and the heartbeat that keeps its lease.

An instance renews its lease every ``lease_heartbeat_seconds`` (default 5 s); a lease
lasts ``lease_ttl_seconds`` (default 20 s) from its last renewal. A server that dies is
therefore noticed 20-25 s later by any other server on the store (the next heartbeat
after the expiry), and a server that exits cleanly ends its lease at once so that the
next one re-adopts its runs on start-up without waiting.

The heartbeat is an awaited timer on the event loop; the store work goes through the
journal's bounded database path. ``on_tick`` runs after each renewal (the engine
resolves the runs of instances whose lease expired there).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import psutil

from jobhost.execution.journal import Journal
from jobhost.models import Execution, Instance, new_id
from jobhost.store import instances, requests

log = logging.getLogger(__name__)


def _running(instance: Instance) -> bool:
    """Whether the instance's process still runs here (its pid, started no later than
    the instance was: a recycled pid is a newer process)."""
    try:
        created = psutil.Process(instance.pid).create_time()
    except psutil.Error:
        return False
    return created <= instance.started_at.timestamp() + 1.0


class Lease:
    """Register, renew and end one instance's lease."""

    def __init__(
        self,
        journal: Journal,
        *,
        kind: str,
        heartbeat_seconds: float,
        ttl_seconds: float,
        clock: Callable[[], datetime],
        on_tick: Callable[[], Awaitable[object]] | None = None,
        host: str | None = None,
        url: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self._journal = journal
        self._store: Any = journal.store
        self._heartbeat = heartbeat_seconds
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._on_tick = on_tick
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.draining = False
        # Runs of a dead server on this host, made ours at ``acquire`` (reconcile adopts
        # them): (the run as it was, its previous owner).
        self.inherited: list[tuple[Execution, Instance]] = []
        now = clock()
        self.instance = Instance(
            id=new_id(),
            host=host or socket.gethostname(),
            pid=os.getpid(),
            kind=kind,
            started_at=now,
            lease_expires_at=now + self._ttl,
            url=url,
            data_dir=data_dir,
        )

    @property
    def id(self) -> str:
        return self.instance.id

    async def acquire(self) -> None:
        """Write the instance row (before any run can name it), end the leases of
        instances on this host whose process is gone (a crashed server restarted here
        need not wait out its predecessor's TTL), and start the heartbeat."""
        self.instance = self.instance.evolve_lease(self._clock() + self._ttl)
        await self._journal.call(instances.register, self._store, self.instance)
        now = self._clock()
        for other in await self._journal.call(instances.live_instances, self._store, now):
            if other.id != self.id and other.host == self.instance.host and not _running(other):
                log.info("%s is no longer running: its lease ends now", other.describe())
                if self.instance.kind != "server":  # the next server takes its runs over
                    await self._journal.call(instances.expire, self._store, other.id, now)
                    continue
                taken = await self._journal.call(
                    instances.take_over, self._store, other.id, self.id, now
                )
                self.inherited += [(execution, other) for execution in taken]
        self._task = asyncio.create_task(self._beat(), name="jobhost-lease")

    async def renew(self) -> None:
        expires = self._clock() + self._ttl
        found = await self._journal.call(
            instances.renew, self._store, self.id, expires, self.draining
        )
        self.instance = self.instance.evolve_lease(expires, self.draining)
        if not found:
            # Our row was removed as dead (the loop stalled past the TTL): say so, and
            # come back under the same id so our runs are ours again.
            log.warning("lease of %s had expired and was removed; registering again", self.id)
            await self._journal.call(instances.register, self._store, self.instance)

    def take_inherited(self) -> list[tuple[Execution, Instance]]:
        """The runs taken over at ``acquire`` that reconciliation has not seen yet."""
        inherited, self.inherited = self.inherited, []
        return inherited

    async def set_url(self, url: str) -> None:
        """Advertise where other servers reach this instance."""
        self.instance = dataclasses.replace(self.instance, url=url)
        await self._journal.call(requests.set_url, self._store, self.id, url)

    async def _beat(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._heartbeat)
            if self._stop.is_set():
                return
            try:
                await self.renew()
                if self._on_tick is not None:
                    await self._on_tick()
            except Exception:  # the next beat tries again; the lease has TTL to spare
                log.exception("lease heartbeat of %s failed", self.id)

    async def stop_heartbeat(self) -> None:
        """Stop renewing (first thing at shutdown: a tick must not reconcile while the
        parts it uses are closing). The lease itself holds until ``release``."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def release(self) -> None:
        """Stop the heartbeat and end the lease now (a clean exit)."""
        await self.stop_heartbeat()
        try:
            await self._journal.call(instances.expire, self._store, self.id, self._clock())
        except Exception:  # the lease then simply runs out after its TTL
            log.exception("could not end the lease of %s", self.id)

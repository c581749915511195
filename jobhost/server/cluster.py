"""Reading the output of a run whose log is in another server's data dir.

A run's log lives in the data dir of the server whose runner ran it, possibly on another
machine. Any server answers for any run: status and history come from the shared store;
output is read here when the log is here, and otherwise **proxied** to a live server that
serves that data dir (the run's owner, or whoever serves the same host and data dir now),
at the URL it advertises in the store (``instances.url``: ``cluster_url``, or the address
``jobhost serve`` is bound to).

The server that was asked authenticates the user and checks their right to view the run;
the internal routes (``/api/v1/cluster/...``, ``jobhost.server.routes.cluster``) accept
only requests signed with the cluster key: HMAC-SHA256 over method, path and query, time
and sending instance, with a key made once in the store (``jobhost.store.requests``), so
every server on the store has it and nothing else does. A signature is good for
``SIGNATURE_SECONDS``; no user credential is accepted there, and nothing unauthenticated is
served. The bytes travel in clear unless ``cluster_url`` is https: keep server-to-server
traffic on a private network, or front each server with TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Request

from jobhost.engine import JobHost
from jobhost.errors import NotAuthenticated, OwnerUnavailable
from jobhost.execution.launch import log_path
from jobhost.models import Action, Execution, Instance, Principal, utcnow
from jobhost.security import can_on_execution
from jobhost.store import instances, requests

HEADER = "X-JobHost-Cluster"
SIGNATURE_SECONDS = 60
CONNECT_SECONDS = 5.0


def signature(key: bytes, method: str, target: str, when: int, sender: str) -> str:
    message = f"{method.upper()}\n{target}\n{when}\n{sender}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def cluster_key(engine: JobHost, request: Request | None = None) -> bytes:
    """The store's cluster key, read once per app."""
    state = request.app.state if request is not None else None
    key: bytes | None = getattr(state, "cluster_key", None) if state is not None else None
    if key is None:
        key = await engine.journal.call(requests.cluster_key, engine.store)
        if state is not None:
            state.cluster_key = key
    return key


def sign_headers(key: bytes, method: str, target: str, sender: str) -> dict[str, str]:
    when = int(time.time())
    return {HEADER: f"v1 {sender} {when} {signature(key, method, target, when, sender)}"}


async def verify(request: Request) -> None:
    """Refuse (401) anything but a fresh request signed with the cluster key."""
    value = request.headers.get(HEADER)
    parts = value.split(" ") if value else []
    if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit():
        raise NotAuthenticated("Internal cluster route: only other JobHost servers may call it")
    _, sender, when, given = parts
    if abs(time.time() - int(when)) > SIGNATURE_SECONDS:
        raise NotAuthenticated(
            f"Cluster signature expired or from the future (more than {SIGNATURE_SECONDS} s "
            "apart): check that the servers' clocks agree"
        )
    engine: JobHost = request.app.state.engine
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    expected = signature(
        await cluster_key(engine, request), request.method, target, int(when), sender
    )
    if not hmac.compare_digest(expected, given):
        raise NotAuthenticated("Invalid cluster signature")


async def running(engine: JobHost, principal: Principal) -> list[Execution]:
    """Live runs the principal may view, this server's and (when another instance is
    alive) those other instances own, as the store has them; oldest first."""
    here = engine.running(principal)
    if not engine.others_alive:
        return here
    known = {e.id for e in here}
    stored = await engine.journal.call(engine.store.active_executions)
    others = [
        e
        for e in stored
        if e.id not in known
        and e.owner != engine.instance_id
        and can_on_execution(principal, engine.catalog.get(e.job_id), e, Action.VIEW)
    ]
    return sorted(here + others, key=lambda e: e.created_at)


# ---------------------------------------------------------------- where a log is
def is_here(engine: JobHost, execution: Execution) -> bool:
    """Whether this server can read the run's log itself."""
    return (
        execution.id in engine.supervisor.live
        or os.path.exists(log_path(engine.settings, execution.id))
        or (
            execution.owner == engine.instance_id and execution.host in (None, engine.settings.node)
        )
    )


def _serves(found: Instance, host: str | None, data_dir: str | None) -> bool:
    return found.host == host and (data_dir is None or found.data_dir == data_dir)


async def peers_for(engine: JobHost, execution: Execution) -> list[str]:
    """URLs of live servers that may hold the run's log, likeliest first; [] when the log
    is in this server's data dir. The run's machine is its ``host``; its data dir is its
    owner's when that owner is on that machine (a run recorded lost from elsewhere is
    owned by the server that recorded it)."""
    now = utcnow()
    known = await engine.journal.call(instances.list_instances, engine.store)
    owner = next((i for i in known if i.id == execution.owner), None)
    host = execution.host or (owner.host if owner is not None else None)
    data_dir = owner.data_dir if owner is not None and owner.host == host else None
    mine = str(engine.settings.data_dir.resolve())
    if host in (None, engine.settings.node) and data_dir in (None, mine):
        return []
    live = [i for i in known if i.alive(now) and i.url and i.id != engine.instance_id]
    found = [i.url for i in live if i.url and i.id == execution.owner and _serves(i, host, None)]
    found += [i.url for i in live if i.url and _serves(i, host, data_dir) and i.url not in found]
    if not found:
        where = f"host {host}" + (f", data dir {data_dir}" if data_dir else "")
        raise OwnerUnavailable(
            f"The output of {execution.id!r} is kept on {where}, where no JobHost server is "
            "running now (or none advertises a URL): start one there, or run "
            f"'jobhost output {execution.id}' on that machine"
        )
    return found


# ---------------------------------------------------------------- proxying
class Peer:
    """Signed requests to one other server's internal routes."""

    def __init__(self, engine: JobHost, key: bytes, url: str) -> None:
        self._engine = engine
        self._key = key
        self.url = url.rstrip("/")

    def _headers(self, method: str, target: str) -> dict[str, str]:
        return sign_headers(self._key, method, target, self._engine.instance_id)

    async def output(self, execution_id: str, offset: int, limit: int) -> dict[str, Any] | None:
        """A page of output (the public route's JSON), or None when the peer lacks the log."""
        target = f"/api/v1/cluster/output/{execution_id}?offset={offset}&limit={limit}"
        timeout = httpx.Timeout(30.0, connect=CONNECT_SECONDS)
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(self.url + target, headers=self._headers("GET", target))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OwnerUnavailable(
                f"The server at {self.url} answered {response.status_code} for the output of "
                f"{execution_id!r}: {response.text[:200]}"
            )
        body: dict[str, Any] = response.json()
        return body

    async def stream(self, execution_id: str, offset: int) -> AsyncIterator[bytes]:
        """The run's SSE frames from ``offset`` (``output`` events, then ``end``), whole
        frames only; the peer's heartbeats are dropped (the caller sends its own)."""
        target = f"/api/v1/cluster/output/{execution_id}/stream?offset={offset}"
        # No read timeout: the peer sends a heartbeat every 15 s while the run is quiet,
        # and a peer that dies closes the connection.
        timeout = httpx.Timeout(None, connect=CONNECT_SECONDS)
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", self.url + target, headers=self._headers("GET", target)) as r,
        ):
            if r.status_code != 200:
                await r.aread()
                raise OwnerUnavailable(
                    f"The server at {self.url} answered {r.status_code} for the output of "
                    f"{execution_id!r}: {r.text[:200]}"
                )
            pending = b""
            async for data in r.aiter_bytes():
                pending += data
                while b"\n\n" in pending:
                    frame, pending = pending.split(b"\n\n", 1)
                    if frame and not frame.startswith(b":"):
                        yield frame + b"\n\n"


async def peer(engine: JobHost, request: Request, execution: Execution) -> list[Peer]:
    """The servers to ask for the run's output ([] when it is read here)."""
    if is_here(engine, execution):
        return []
    urls = await peers_for(engine, execution)
    key = await cluster_key(engine, request)
    return [Peer(engine, key, url) for url in urls]


async def read_page(
    engine: JobHost,
    request: Request,
    execution: Execution,
    principal: Principal,
    offset: int,
    limit: int,
) -> dict[str, Any]:
    """A page of the run's output (the output route's JSON), from wherever its log is;
    the principal's right to view the run is checked by the caller."""
    for other in await peer(engine, request, execution):
        page = await other.output(execution.id, offset, limit)
        if page is not None:
            return page
    chunk = await engine.read_output(execution.id, principal, offset=offset, limit=limit)
    return chunk.to_api()

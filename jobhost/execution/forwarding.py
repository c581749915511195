"""Stops and restarts that reach a run's owner, from whichever server was asked.

Only a run's owner acts on it (its process is the owner's runner's child). A server asked
to stop or restart a run another live server owns checks permission, audits, and sends a
**request**: a ``run_requests`` row (``jobhost.store.requests``) naming the run. The owner
consumes the rows for the runs it owns, acts as the user who asked (recording them as
``stopped_by``), and writes the answer back; the sender returns that answer.

Waking: on PostgreSQL each row is announced with ``NOTIFY`` in its own transaction, and
every server keeps one ``LISTEN`` connection, so the owner reads a request as soon as it
is committed (milliseconds) and the sender reads the answer the same way. The row is the
request, the notification only a wake-up: a server that was not listening (reconnecting,
starting) reads what it missed when it listens again, and every lease heartbeat sweeps
too. A request for a run whose owner died is answered by the server that takes the run
over (it owns the run from then on). On SQLite (one host, and normally one server) there
is no notification: requests are read on the heartbeat (``lease_heartbeat_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from jobhost.errors import Conflict, ExecutionNotFound, JobHostError, OwnerUnavailable
from jobhost.execution.journal import Journal
from jobhost.models import Execution, Principal, RunRequest, new_id
from jobhost.store import requests

if TYPE_CHECKING:
    from jobhost.engine import JobHost

log = logging.getLogger(__name__)

# The answer to a request, or None to leave it for later (a run not adopted yet).
Apply = Callable[[RunRequest], Awaitable[dict[str, Any] | None]]
RECONNECT_MAX_SECONDS = 30.0
# How long the server that was asked waits for the owner's answer to a stop; a restart
# waits this long past the job's stop grace (the owner stops the run before it starts
# the next).
ANSWER_SECONDS = 10.0


def error_answer(exc: JobHostError) -> dict[str, Any]:
    return exc.to_dict()


def raise_answer(answer: dict[str, Any]) -> None:
    """Raise the error an answer carries, as the class the owner raised (same status)."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return
    code = str(error.get("code", "error"))
    found: type[JobHostError] = JobHostError
    pending: list[type[JobHostError]] = [JobHostError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            found = cls
            break
        pending.extend(cls.__subclasses__())
    raise found(str(error.get("message", "")), details=error.get("details") or {})


def listen_dsn(url: str) -> str | None:
    """A libpq connection string for ``LISTEN`` (the store's own URL), or None when the
    store is not PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Forwarding:
    """Send requests for other servers' runs; answer those for ours."""

    def __init__(
        self,
        journal: Journal,
        me: str,
        apply: Apply,
        clock: Callable[[], datetime],
        *,
        dsn: str | None,
        on_changed: Callable[[list[str], dict[str, Any]], Coroutine[Any, Any, None]] | None = None,
        on_peer: Callable[[], None] | None = None,
    ) -> None:
        self._journal = journal
        self._store: Any = journal.store
        self._me = me
        self._apply = apply
        self._clock = clock
        self._dsn = dsn
        self._on_changed = on_changed
        self._on_peer = on_peer
        self._reading: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._again = False
        self._applying: dict[str, asyncio.Task[None]] = {}
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Listen (PostgreSQL) and answer what is already waiting."""
        if self._dsn is not None:
            self._task = asyncio.create_task(self._listen(), name="jobhost-forwarding")
        self.wake()

    async def aclose(self) -> None:
        for task in (self._task, self._sweeping, *self._applying.values(), *self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sweeping = None
        for future in self._waiting.values():
            future.cancel()

    # ----------------------------------------------------------------- sending
    async def send(self, request: RunRequest, owner: str, timeout: float) -> dict[str, Any] | None:
        """Record ``request`` for ``owner`` and await the answer for up to ``timeout``
        seconds; None when none came in time (the request stays, and is still carried
        out when the owner, or whoever takes its runs over, reads it)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = future
        try:
            await self._journal.call(requests.add, self._store, request, owner)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            stored = await self._journal.call(requests.get, self._store, request.id)
            return stored.answer if stored is not None else None
        finally:
            self._waiting.pop(request.id, None)

    # ----------------------------------------------------------------- answering
    def wake(self) -> None:
        """Read the requests for our runs and the answers we wait for (coalesced: one
        sweep at a time, and one more if woken meanwhile)."""
        if self._sweeping is not None and not self._sweeping.done():
            self._again = True
            return
        self._sweeping = asyncio.get_running_loop().create_task(
            self._sweep_until_quiet(), name="jobhost-forwarding-sweep"
        )

    async def sweep(self) -> None:
        """One pass, awaited (the lease heartbeat calls this: the safety net)."""
        await self._answer_pending()
        await self._collect_answers()

    async def _sweep_until_quiet(self) -> None:
        while True:
            self._again = False
            try:
                await self.sweep()
            except Exception:  # the next wake-up or heartbeat tries again
                log.exception("reading run requests failed")
            if not self._again:
                return

    async def _answer_pending(self) -> None:
        # Each request on its own task: a restart waiting out a stop grace must not hold
        # up a stop that arrives behind it.
        for request in await self._journal.call(requests.pending, self._store, self._me):
            if request.id not in self._applying:
                task = asyncio.get_running_loop().create_task(self._answer(request))
                self._applying[request.id] = task
                task.add_done_callback(functools.partial(self._applied, request.id))

    def _applied(self, request_id: str, _task: asyncio.Task[None]) -> None:
        self._applying.pop(request_id, None)

    async def _answer(self, request: RunRequest) -> None:
        reply: dict[str, Any] | None
        try:
            reply = await self._apply(request)
        except JobHostError as exc:
            reply = error_answer(exc)
        except Exception as exc:
            log.exception("request %s (%s) failed", request.id, request.action)
            reply = {"error": {"code": "error", "message": str(exc), "details": {}}}
        if reply is None:
            return
        try:
            await self._journal.call(requests.answer, self._store, request, reply, self._clock())
        except Exception:  # applied but not answered: the sender times out and reads the run
            log.exception("answering request %s failed", request.id)

    async def _collect_answers(self) -> None:
        for request_id, future in list(self._waiting.items()):
            if future.done():
                continue
            stored = await self._journal.call(requests.get, self._store, request_id)
            if stored is not None and stored.answer is not None and not future.done():
                future.set_result(stored.answer)

    # ----------------------------------------------------------------- listening
    def _on_notify(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if not isinstance(note, dict) or note.get("to") not in (self._me, None):
            return  # for another server (or another schema on the same database)
        if note.get("kind") == "hello":  # another server started listening
            if self._on_peer is not None and note.get("from") != self._me:
                self._on_peer()
            return
        if note.get("kind") == "changed":  # another server's runs changed (execution.feed)
            ids = note.get("ids")
            progress = note.get("progress")
            if self._on_changed is not None and note.get("from") != self._me and ids:
                task = asyncio.get_running_loop().create_task(
                    self._on_changed(
                        [str(i) for i in ids], progress if isinstance(progress, dict) else {}
                    )
                )
                self._reading.add(task)
                task.add_done_callback(self._reading.discard)
            return
        if note.get("kind") == "answer" and note.get("request") not in self._waiting:
            return
        self.wake()

    async def _listen(self) -> None:
        import psycopg

        assert self._dsn is not None
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {requests.CHANNEL}")
                    # Say so: the servers already there send this one their runs' changes
                    # from now on, not from their next heartbeat (up to 5 s of ends missed).
                    hello = json.dumps({"to": None, "kind": "hello", "from": self._me})
                    await conn.execute("SELECT pg_notify(%s, %s)", (requests.CHANNEL, hello))
                    self.listening.set()
                    delay = 0.5
                    self.wake()  # what was sent while we were not listening
                    async for note in conn.notifies():
                        self._on_notify(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for run requests failed (%s); again in %.1f s", exc, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)


# --------------------------------------------------------------------- engine side
def owned_elsewhere(host: JobHost, execution: Execution) -> bool:
    """An active run another instance owns (this server cannot act on it itself)."""
    return (
        not execution.status.terminal
        and execution.id not in host.supervisor.live
        and execution.owner != host.instance_id
    )


def _request(
    host: JobHost,
    principal: Principal,
    execution: Execution,
    action: str,
    variables: Any = None,
    by: str | None = None,
) -> RunRequest:
    return RunRequest(
        id=new_id(),
        execution_id=execution.id,
        action=action,
        username=principal.username,
        roles=principal.roles,
        superuser=principal.superuser,
        sender=host.instance_id,
        created_at=host.clock(),
        variables=variables,
        stopped_by=by,
    )


def _owner_name(execution: Execution) -> str:
    return f"{(execution.owner or 'unknown')[:8]} on {execution.host or 'an unknown host'}"


async def forward_stop(
    host: JobHost, principal: Principal, execution: Execution, address: str | None, by: str
) -> Execution:
    """Stop a run another server owns, through that server (permission already checked);
    audited here, as the user who asked; the run records ``by`` as who stopped it. Returns
    the run as the owner left it (normally ``stopping``), or as stored when the owner did
    not answer in time."""
    request = _request(host, principal, execution, "stop", by=by)
    answer = await host.forwarding.send(request, execution.owner or "", ANSWER_SECONDS)
    outcome = "pending" if answer is None else "error" if "error" in answer else "ok"
    await host.audit(
        "job.stop",
        principal,
        execution.job_id,
        outcome="ok" if outcome != "error" else "failed",
        address=address,
        details={
            "executions": [execution.id],
            "forwarded_to": execution.owner,
            "answer": outcome,
            "request": request.id,
        },
    )
    if answer is not None:
        raise_answer(answer)
    stored = await host.journal.call(host.store.get_execution, execution.id)
    return stored or execution


async def elsewhere_of_job(host: JobHost, job_id: str) -> list[Execution]:
    """The job's active runs that other instances own (a job-wide stop reaches them too)."""
    active = await host.journal.call(host.store.active_executions)
    return [e for e in active if e.job_id == job_id and owned_elsewhere(host, e)]


async def forward_stops(
    host: JobHost,
    principal: Principal,
    executions: list[Execution],
    address: str | None,
    by: str,
) -> list[Execution]:
    """``forward_stop`` for each; a run that ended meanwhile is left out."""
    stopped = []
    for execution in executions:
        try:
            stopped.append(await forward_stop(host, principal, execution, address, by))
        except Conflict:
            continue
    return stopped


async def forward_restart(
    host: JobHost,
    principal: Principal,
    execution: Execution,
    variables: dict[str, Any] | None,
    address: str | None,
) -> Execution:
    """Restart a run another server owns, on that server (the new run is its too, with its
    data dir and state folder); audited here. Secret values are never written to the
    store, so a restart that gives some must be sent to the owner itself."""
    job = host.catalog.get(execution.job_id)
    definition = job.definition if job is not None else None
    secret = sorted(
        name
        for name, spec in (definition.template_variables.items() if definition else ())
        if spec.secret and name in (variables or {})
    )
    if secret:
        raise Conflict(
            f"Execution {execution.id!r} runs under another server ({_owner_name(execution)}); "
            f"a restart with secret values ({', '.join(secret)}) is not passed through the "
            "store: send it to that server (jobhost instances lists them)"
        )
    grace = definition.stop_grace_seconds if definition is not None else 10.0
    request = _request(host, principal, execution, "restart", variables)
    answer = await host.forwarding.send(request, execution.owner or "", grace + ANSWER_SECONDS)
    failed = answer is not None and "error" in answer
    started = None if answer is None or failed else answer.get("execution")
    await host.audit(
        "job.restart",
        principal,
        execution.job_id,
        outcome="failed" if failed else "ok",
        address=address,
        details={
            "execution": started,
            "replaced": [execution.id],
            "forwarded_to": execution.owner,
            "request": request.id,
        },
    )
    if answer is None:
        raise OwnerUnavailable(
            f"The server that owns {execution.id!r} ({_owner_name(execution)}) has not "
            "answered the restart yet; it is recorded and will be carried out "
            f"(request {request.id})"
        )
    raise_answer(answer)
    stored = await host.journal.call(host.store.get_execution, str(started))
    if stored is None:
        raise ExecutionNotFound(f"No execution {started!r}")
    return stored


async def apply_request(host: JobHost, request: RunRequest) -> dict[str, Any] | None:
    """Carry out a request for one of our runs, as the user who made it (the server that
    took it checked their permission and audited it). None: the run is ours but not
    adopted yet (reconciliation is under way); the next sweep answers it."""
    execution_id = request.execution_id
    live = host.supervisor.live.get(execution_id)
    if live is None or live.status.terminal:
        stored = await host.journal.call(host.store.get_execution, execution_id)
        if stored is not None and not stored.status.terminal and live is None:
            return None
        status = stored.status.value if stored is not None else "unknown"
        raise Conflict(f"Execution {execution_id!r} has already ended ({status})")
    if request.action == "stop":
        stopped = await host.supervisor.stop(
            execution_id, by=request.stopped_by or request.username
        )
        return {"execution": stopped.id}
    if request.action == "restart":
        started = await host.restart(
            request.principal,
            execution_id=execution_id,
            variables=request.variables,
            audited=False,
        )
        return {"execution": started.id}
    raise Conflict(f"Unknown request {request.action!r} for {execution_id!r}")


async def announce_changed(
    host: JobHost, execution_ids: list[str], progress: dict[str, Any]
) -> None:
    """Runs another server changed, told to this server's subscribers (``/events``), with
    the progress reports its note carried laid over the stored rows (``execution.feed``)."""
    found = await host.journal.call(requests.executions, host.store, execution_ids)
    for execution in found:
        if execution.id in host.supervisor.live:
            continue
        report = progress.get(execution.id)
        if not execution.status.terminal and isinstance(report, list) and len(report) == 2:
            fraction, message = report
            if (fraction is None or isinstance(fraction, int | float)) and (
                message is None or isinstance(message, str)
            ):
                execution = execution.evolve(progress=fraction, progress_message=message)
        host.supervisor.announce(execution)

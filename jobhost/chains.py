"""Chaining: when a run ends, start the jobs of its ``on_success`` / ``on_failure``.

A ``Hook`` on finished runs. The final outcome of a run decides (an attempt that will be
retried decides nothing yet); ``succeeded`` follows ``on_success``, ``failed``,
``timed_out`` and ``lost`` follow ``on_failure``; a stopped run, a test run and a run
that never started chain nothing.

Each link's variables are rendered from the ended run: ``{{Name}}`` is its variable,
``{{result.a.b}}`` a value of its JSON result (a value that is exactly one reference
keeps its JSON type). The new run starts through ``JobHost.start`` like any other — the
same permission check, variable checks, init hook and concurrency rules — as the user who
started the first run of the chain (each chained run keeps that user), with the trigger
``chain`` and ``triggered_by`` naming the run it follows. A link that cannot start is
recorded as a ``rejected`` run saying why, so a broken chain shows in history. The ended
run lists what it started in ``chained``. Cycles are refused when the catalog is built
(``jobhost.catalog.chaingraph``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobhost.abc import Hook
from jobhost.catalog.definition import JobDefinition, to_text
from jobhost.catalog.policies import CHAIN_REF, ChainLink
from jobhost.errors import JobHostError, PermissionDenied, VariableError
from jobhost.models import Execution, ExecutionStatus, Principal, Trigger, new_id

if TYPE_CHECKING:
    from jobhost.engine import JobHost

log = logging.getLogger(__name__)

_ON_FAILURE = frozenset({ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.LOST})
_MISSING = object()


def links_for(definition: JobDefinition, ended: Execution) -> tuple[str, list[ChainLink]]:
    """(the field, its links) that ``ended`` follows; no links for a run that is not final."""
    if ended.test or ended.next_attempt is not None:
        return "", []
    if ended.status is ExecutionStatus.SUCCEEDED:
        return "on_success", definition.on_success
    if ended.status in _ON_FAILURE:
        return "on_failure", definition.on_failure
    return "", []


def _lookup(ended: Execution, reference: str) -> Any:
    if reference == "result" or reference.startswith("result."):
        value: Any = ended.result
        for part in reference.split(".")[1:]:
            if isinstance(value, Mapping):
                value = value.get(part, _MISSING)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = _MISSING
            if value is _MISSING:
                raise VariableError(
                    f"{{{{{reference}}}}} is not in the result of {ended.id} "
                    f"(result: {json.dumps(ended.result)[:200]})"
                )
        return value
    if reference not in ended.variables:
        raise VariableError(f"{{{{{reference}}}}} has no value in {ended.id}")
    return ended.variables[reference]


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def link_variables(link: ChainLink, ended: Execution) -> dict[str, Any]:
    """The link's variables rendered from ``ended``'s variables and result."""
    rendered: dict[str, Any] = {}
    for name, template in link.variables.items():
        if not isinstance(template, str):
            rendered[name] = template
            continue
        whole = CHAIN_REF.fullmatch(template)
        if whole is not None:
            rendered[name] = _scalar(_lookup(ended, whole.group(1)))
            continue
        rendered[name] = CHAIN_REF.sub(
            lambda m: to_text(_scalar(_lookup(ended, m.group(1)))), template
        )
    return rendered


class Chains(Hook):
    """Starts the linked jobs of every run that ends (see the module docstring)."""

    def __init__(self, engine: JobHost) -> None:
        self._engine = engine
        self._seen: dict[str, Principal] = {}  # username → its principal at its last start
        self._tasks: set[asyncio.Task[None]] = set()

    def saw(self, principal: Principal) -> None:
        """Remember who started a run: a chain acts as them later (local users and the
        scheduler's principal are not in the store)."""
        self._seen[principal.username] = principal

    def execution_finished(self, execution: Execution, previous: Execution | None) -> None:
        job = self._engine.catalog.get(execution.job_id)
        definition = job.definition if job is not None else None
        if definition is None:
            return
        field, links = links_for(definition, execution)
        if not links:
            return
        task = asyncio.get_running_loop().create_task(self._follow(execution, field, links))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, ended: Execution, field: str, links: list[ChainLink]) -> None:
        engine = self._engine
        started: list[str] = []
        for index, link in enumerate(links):
            try:
                principal = await self._principal_of(ended)
                run = await engine.start(
                    link.job,
                    link_variables(link, ended),
                    principal,
                    trigger=Trigger.CHAIN,
                    triggered_by=ended.id,
                )
            except JobHostError as exc:
                run = await self._refused(ended, link, f"{field}[{index}]", exc.message)
            except Exception:
                log.exception("chain %s[%d] of %s failed", field, index, ended.id)
                continue
            started.append(run.id)
        if started:
            await self._link(ended, started)

    async def _principal_of(self, ended: Execution) -> Principal:
        """The user who started the chain, with their roles as stored now."""
        engine = self._engine
        name = ended.user
        user = await engine.journal.call(engine.store.get_user, name) if name else None
        if user is not None:
            if user.disabled:
                raise PermissionDenied(f"{name!r}, who started this chain, is disabled")
            return Principal(
                username=user.username,
                roles=frozenset(user.roles),
                superuser=engine.settings.is_superuser(user.roles),
            )
        seen = self._seen.get(name or "")
        if seen is None:
            raise PermissionDenied(f"{name!r}, who started this chain, is not a known user")
        return seen

    async def _refused(self, ended: Execution, link: ChainLink, where: str, why: str) -> Execution:
        now = self._engine.clock()
        refused = Execution(
            id=new_id(),
            job_id=link.job,
            status=ExecutionStatus.REJECTED,
            trigger=Trigger.CHAIN,
            user=ended.user,
            created_at=now,
            ended_at=now,
            error=f"Not started by {where} of {ended.job_id} ({ended.id}): {why}",
            triggered_by=ended.id,
            owner=self._engine.instance_id,
        )
        await self._engine.supervisor.record_unstarted(refused)
        return refused

    async def _link(self, ended: Execution, started: list[str]) -> None:
        supervisor = self._engine.supervisor
        current = supervisor.recent.get(ended.id, ended)
        linked = current.evolve(chained=(*current.chained, *started))
        await self._engine.journal.record(linked)
        supervisor.remember(linked)
        supervisor.announce(linked)

    async def aclose(self) -> None:
        """Let the chains already following finish starting their runs."""
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

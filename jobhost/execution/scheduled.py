"""The ``scheduled`` runs of this server (a retry's next attempt, a run-at start): taken
over from servers that stopped, started when due, cancelled by a stop.

``DueRuns`` (``jobhost.execution.due``) keeps the timer; this service knows what a due
run becomes: the run it stood for, started through the supervisor under the usual
admission (so a full job or group queues it, and ``on_conflict = reject`` records it
``rejected`` with why), keeping its ID. A run planned by this process reuses the launch
it resolved then; one taken over from another server is rebuilt from its row (its
variables were checked when it was planned; secret values are never stored, so a run
that needs them is recorded ``rejected``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobhost.catalog.templates import check_variables, render
from jobhost.errors import Conflict, InvalidDefinition, JobHostError, VariableError
from jobhost.execution.due import DueRuns
from jobhost.execution.live import Launch
from jobhost.models import Action, Execution, ExecutionStatus, Principal
from jobhost.security import can_on_execution

if TYPE_CHECKING:
    from jobhost.engine import JobHost


class ScheduledRuns:
    """Scheduled runs waiting here for their due time."""

    def __init__(self, engine: JobHost) -> None:
        self._engine = engine
        self.due = DueRuns(engine.clock, self._fire)
        self._held: list[tuple[Execution, Launch | None]] = []  # due during a drain

    def add(self, planned: Execution, launch: Launch | None = None) -> None:
        """Start ``planned`` when due, with ``launch`` (None: rebuilt from the row)."""
        self.due.add(planned, launch)

    def take_over(self, orphan: Execution) -> bool:
        """A ``scheduled`` run of a server that stopped (reconciliation): ours now."""
        self.due.add(orphan.evolve(owner=self._engine.instance_id))
        return True

    def pending(self, principal: Principal | None = None) -> list[Execution]:
        """The runs waiting here, soonest first (those ``principal`` may view)."""
        runs = self.due.pending()
        if principal is None:
            return runs
        catalog = self._engine.catalog
        return [
            e for e in runs if can_on_execution(principal, catalog.get(e.job_id), e, Action.VIEW)
        ]

    async def cancel(self, execution: Execution, *, by: str | None = None) -> Execution:
        """End a ``scheduled`` run before it is due (``stopped`` by ``by``, never ran)."""
        engine = self._engine
        if self.due.cancel(execution.id) is None:
            if execution.owner != engine.instance_id:
                raise Conflict(
                    f"Execution {execution.id!r} is scheduled under another JobHost instance "
                    f"({(execution.owner or 'unknown')[:8]}); send the stop to that server"
                )
            raise Conflict(f"Execution {execution.id!r} is starting now; stop it again")
        stopped = execution.evolve(
            status=ExecutionStatus.STOPPED,
            ended_at=engine.clock(),
            error="Cancelled before it was due; it never ran",
            stopped_by=by,
        )
        await engine.supervisor.record_unstarted(stopped)
        return stopped

    def resume(self) -> None:
        """A drain ended: the runs that came due during it start now."""
        held, self._held = self._held, []
        for planned, launch in held:
            self.due.add(planned, launch)

    async def _fire(self, planned: Execution, launch: Launch | None) -> None:
        engine = self._engine
        if engine.draining:  # waits for resume, or (left scheduled) for the next server
            self._held.append((planned, launch))
            return
        try:
            if launch is None:
                launch = await self._relaunch(planned)
            await engine.supervisor.submit(
                launch,
                user=planned.user,
                trigger=planned.trigger,
                test=planned.test,
                redacted=planned.variables,
                planned=planned,
            )
        except JobHostError as exc:
            await engine.supervisor.record_unstarted(
                planned.evolve(
                    status=ExecutionStatus.REJECTED,
                    ended_at=engine.clock(),
                    error=f"Not started when due: {exc.message}",
                    owner=engine.instance_id,
                )
            )

    async def _relaunch(self, planned: Execution) -> Launch:
        """The launch of a run taken over from another server: its variables as stored,
        its starter's roles as stored now."""
        engine = self._engine
        job = engine.catalog.get(planned.job_id)
        definition = job.definition if job is not None else None
        if job is None or definition is None or not job.valid:
            raise InvalidDefinition(f"Job {planned.job_id!r} is not a valid job of the catalog now")
        secret = sorted(
            name
            for name, spec in definition.template_variables.items()
            if spec.secret and name in planned.variables
        )
        if secret:
            raise VariableError(
                f"the secret variable(s) {', '.join(secret)} are not kept across a server "
                "restart; start the job again"
            )
        values = check_variables(definition, planned.variables)
        user = planned.user
        stored = await engine.journal.call(engine.store.get_user, user) if user else None
        return Launch(
            job=job,
            variables=values,
            rendered=render(definition, values),
            roles=frozenset(stored.roles) if stored is not None else frozenset(),
        )

    async def aclose(self) -> None:
        """Stop the timer; what is still due stays ``scheduled`` for the next server."""
        await self.due.aclose()

"""Seeing before doing: what a start of a job would do, without starting it.

``plan_run`` answers, for one job and the variables given: the next fires of its
schedule (UTC and in its zone), the init script's verdict, the argv, working directory
and environment the process would get (secret values as ``***``), its limits, and
whether a start now would start, queue (at which position) or be refused, and why.

It runs the init script (the verdict is half of the answer: init scripts validate and
fill variables, they must not change things) and nothing else: no record, no process of
the job, no folder made.

Permission: a plan shows the argv and environment a start would pass, which can hold
what the variables carry, so it needs the right to start the job (``roles_start``),
not only to view it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from jobhost.catalog.definition import JobDefinition, command_for
from jobhost.catalog.discovery import Job
from jobhost.catalog.templates import apply_defaults, check_variables, redact, render
from jobhost.config import Settings
from jobhost.errors import InitHookFailed, InvalidDefinition, PermissionDenied, VariableError
from jobhost.execution.choices import ChoiceLists
from jobhost.execution.init_hook import run_init_hook
from jobhost.execution.launch import Launcher, base_env
from jobhost.models import Action, Execution, ExecutionStatus, Override, Principal, Trigger, iso
from jobhost.redact import MASK, mask_text
from jobhost.schedule_plan import build_entry
from jobhost.security import can

if TYPE_CHECKING:
    from jobhost.engine import JobHost

FIRES_SHOWN = 5
PENDING_ID = "<assigned-at-start>"


@dataclass(frozen=True, slots=True)
class Admission:
    """What a start now would meet: ``start``, ``queue`` (at ``position``, 1 = next) or
    ``reject`` (``reason`` says why)."""

    verdict: Literal["start", "queue", "reject"]
    reason: str
    position: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "position": self.position}


def admission(
    definition: JobDefinition,
    *,
    active: int,
    queued: int,
    queued_total: int,
    max_queue: int,
    test: bool = False,
) -> Admission:
    """The admission rule over counts alone (``max_concurrent``/``on_conflict`` and the
    queue bound): the local CLI's view from the store, which has no live slots. On a
    server the plan asks the supervisor's own rule instead (``admission_now``)."""
    limit = definition.max_concurrent
    if test:
        return Admission("start", "a test run ignores max_concurrent")
    if not limit:
        return Admission("start", "max_concurrent is 0 (no limit)")
    if active + queued < limit:
        return Admission("start", f"{active} of max_concurrent={limit} active")
    if definition.on_conflict == "reject":
        return Admission(
            "reject",
            f"{active} active execution(s) and {queued} queued reach max_concurrent={limit} "
            "with on_conflict=reject (the API answers 409)",
        )
    if queued_total >= max_queue:
        return Admission("reject", f"the queue is full ({max_queue} waiting; the API answers 429)")
    position = queued + 1
    if definition.on_conflict == "replace":
        return Admission(
            "queue",
            f"on_conflict=replace: the {active} active execution(s) are stopped, then it starts",
            position,
        )
    return Admission(
        "queue",
        f"on_conflict=queue: {active} active of max_concurrent={limit}, {queued} queued before it",
        position,
    )


def _fires(
    job: Job, override: Override | None, settings: Settings, now: datetime
) -> dict[str, Any]:
    entry = build_entry(
        job,
        override,
        default_timezone=settings.default_timezone,
        default_grace=settings.misfire_grace_seconds,
    )
    fires = []
    if entry.active and entry.schedule is not None:
        from jobhost.cron import zone

        tz = zone(entry.tz)
        fires = [
            {"at": iso(when), "local": when.astimezone(tz).isoformat()}
            for when in entry.schedule.next_fires(now, FIRES_SHOWN)
        ]
    return {
        "expression": entry.expr,
        "timezone": entry.tz,
        "source": entry.source,
        "enabled": entry.enabled,
        "problem": entry.problem,
        "next": fires,
    }


async def plan_run(
    job: Job,
    variables: Mapping[str, Any],
    principal: Principal,
    *,
    settings: Settings,
    override: Override | None,
    decide: Callable[[dict[str, Any]], Admission],
    draining: bool,
    now: datetime,
    choices: ChoiceLists | None = None,
) -> dict[str, Any]:
    """The plan of a start of ``job`` now (see the module docstring); permission is the
    caller's to check (``plan_on_engine`` does)."""
    definition = job.definition
    plan: dict[str, Any] = {
        "job_id": job.id,
        "schedule": _fires(job, override, settings, now),
        "variables": dict(variables),
        "init": {
            "script": job.init_script.name if job.init_script else None,
            "verdict": "none",
            "message": None,
        },
        "argv": None,
        "cwd": str(job.folder),
        "env": None,
        "limits": None,
        "problems": [],
    }
    problems: list[str] = plan["problems"]
    if definition is None or not job.valid:
        problems.extend(job.errors)
        invalid = Admission("reject", "the job is invalid: " + "; ".join(job.errors))
        plan["admission"] = invalid.to_api()
        return plan
    plan["limits"] = _limits(definition, settings)
    values: dict[str, Any] | None = apply_defaults(definition, variables)
    if job.init_script is not None:
        try:
            assert values is not None
            values = await run_init_hook(
                job, values, timeout=settings.init_timeout_seconds, env=base_env()
            )
            plan["init"]["verdict"] = "accepted"
        except InitHookFailed as exc:
            plan["init"].update(verdict="rejected", message=exc.message)
            problems.append(f"init script rejected the variables: {exc.message}")
            values = None
    if values is not None:
        try:
            lists = choices if choices is not None else ChoiceLists()
            values = check_variables(await lists.definition(job), values)
        except VariableError as exc:
            problems.append(exc.message)
            values = None
    if values is not None:
        plan["variables"] = redact(definition, values)
        _process(plan, job, values, principal, settings)
    verdict = decide(values) if values is not None else None
    if problems or verdict is None:
        verdict = Admission("reject", problems[0] if problems else "the variables were refused")
    elif draining:
        verdict = Admission("reject", "the server is draining for an upgrade (the API answers 503)")
    elif not definition.enabled:
        verdict = Admission("reject", 'the job is disabled ("enabled": false in its job.json)')
    plan["admission"] = verdict.to_api()
    return plan


def _process(
    plan: dict[str, Any],
    job: Job,
    values: dict[str, Any],
    principal: Principal,
    settings: Settings,
) -> None:
    """argv and environment as the launcher would build them, secrets masked."""
    definition = job.definition
    assert definition is not None and job.script is not None
    rendered = render(definition, values)
    try:
        argv = [*command_for(job.script), *rendered.argv_extra]
    except InvalidDefinition as exc:
        plan["problems"].append(exc.message)
        return
    pending = Execution(
        id=PENDING_ID,
        job_id=job.id,
        status=ExecutionStatus.QUEUED,
        trigger=Trigger.USER,
        user=principal.username,
    )
    launcher = Launcher(settings)
    state = str(settings.state_dir.resolve().joinpath(*job.id.split("/", 1)))
    env = base_env()
    env.update(rendered.env)
    env.update(launcher.contract_env(job, pending, values, principal.roles, state))
    secrets = [
        str(values[name])
        for name, spec in definition.template_variables.items()
        if spec.secret and values.get(name) not in (None, "")
    ]
    plan["argv"] = [mask_text(str(part), secrets) for part in argv]
    plan["env"] = {key: mask_text(value, secrets) for key, value in sorted(env.items())}
    if secrets:
        for name, spec in definition.template_variables.items():
            if spec.secret and f"JOBHOST_VAR_{name}" in plan["env"]:
                plan["env"][f"JOBHOST_VAR_{name}"] = MASK


def _limits(definition: JobDefinition, settings: Settings) -> dict[str, Any]:
    launcher = Launcher(settings)
    resources = (
        definition.limits.over(settings.limits) if definition.limits else settings.limits
    ).resources()
    return {
        "timeout_seconds": launcher.timeout(definition),
        "stop_grace_seconds": definition.stop_grace_seconds,
        "max_concurrent": definition.max_concurrent,
        "on_conflict": definition.on_conflict,
        "memory_max_bytes": resources.memory_max_bytes,
        "cpu_quota_percent": resources.cpu_quota_percent,
        "cpu_weight": resources.cpu_weight,
        "pids_max": resources.pids_max,
        "nice": resources.nice,
        "open_files": resources.open_files,
        "run_as": definition.run_as.user if definition.run_as else None,
    }


def require_plan_right(principal: Principal, job: Job) -> None:
    """A plan needs the start right (see the module docstring)."""
    if can(principal, job, Action.START):
        return
    roles = job.definition.roles_for(Action.START) if job.definition else None
    need = f"one of the roles {', '.join(roles)}" if roles else "a superuser role"
    raise PermissionDenied(
        f"{principal.username!r} may not see the plan of {job.id!r}: it shows what a start "
        f"would pass, so it requires the start right ({need})"
    )


async def plan_on_engine(
    engine: JobHost,
    job_id: str,
    variables: Mapping[str, Any],
    principal: Principal,
    *,
    address: str | None = None,
) -> dict[str, Any]:
    """``plan_run`` against a live engine: its schedules, its live and queued runs."""
    job = engine.job(job_id, principal)
    try:
        require_plan_right(principal, job)
    except PermissionDenied:
        await engine.audit("job.plan", principal, job.id, outcome="denied", address=address)
        raise
    override = None
    if engine.scheduler is not None:
        override = engine.scheduler.service.overrides.get(job.id)
    else:
        from jobhost.schedules import sql_store
        from jobhost.store import schedules as db

        overrides = await engine.journal.call(db.load_overrides, sql_store(engine))
        override = overrides.get(job.id)
    return await plan_run(
        job,
        variables,
        principal,
        settings=engine.settings,
        override=override,
        decide=lambda values: admission_now(engine, job, values),
        draining=engine.draining,
        now=engine.clock(),
        choices=engine.choices,
    )


def admission_now(engine: JobHost, job: Job, values: Mapping[str, Any]) -> Admission:
    """What the supervisor's own rule (``jobhost.execution.admission.admit``) answers for
    a start of ``job`` with ``values`` now: its concurrency key and group included."""
    from jobhost.execution.admission import FREE, Policy, Queue, Reject, admit
    from jobhost.execution.concurrency import admission_of, slot_of

    definition = job.definition
    assert definition is not None
    slot = slot_of(job.id, definition, values)
    request = admission_of(slot, Policy.of(definition))
    slots = engine.supervisor.slots
    occupancy = slots.occupancy(slot, engine.settings.max_queue) if request.limited else FREE
    decision = admit(request, occupancy)
    if isinstance(decision, Reject):
        return Admission("reject", decision.reason)
    limit = definition.max_concurrent
    active = f"{len(occupancy.active)} active of max_concurrent={limit or 'unlimited'}"
    if slot.key is not None:
        active += f" for concurrency_key {slot.key!r}"
    if slot.group is not None:
        active += (
            f"; concurrency_group {slot.group!r}: {occupancy.group_active} of "
            f"{occupancy.group_limit or 'unlimited'} held"
        )
    if isinstance(decision, Queue):
        replaced = "; the active runs are stopped (on_conflict=replace)" if decision.replace else ""
        return Admission("queue", f"{active}{replaced}", slots.place(slot))
    return Admission("start", active)

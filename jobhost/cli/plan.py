"""``jobhost plan JOB [--var N=V]``: what a start now would do, without starting it.

With a server configured, the server's plan (its schedules, live runs and queue).
Locally, the plan is made from the job folder, the stored schedule override and the
runs the store records as active or queued (those of a server on the same store
included); the local CLI is superuser, so no permission applies.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape

from jobhost.catalog.definition import parse_job_id
from jobhost.catalog.discovery import scan
from jobhost.cli.common import handle_errors, open_store, out, parse_vars, print_json, state
from jobhost.models import ExecutionStatus, HistoryQuery, Principal, utcnow

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="A variable as NAME=VALUE (repeatable).")
]
WAITING = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.STARTING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.STOPPING,
)


@handle_errors
def plan_cmd(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="App/Job")],
    var: VarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What a start would do now: next fires, argv, env, init verdict, limits, admission."""
    parse_job_id(job_id)
    variables = parse_vars(var)
    if (server := state(ctx).remote()) is not None:
        from jobhost.cli.remote import connect
        from jobhost.client import plain

        with connect(server) as client:
            plan = plain(client.plan(job_id, variables))
    else:
        plan = _local_plan(ctx, job_id, variables)
    if as_json:
        print_json(plan)
    else:
        print_plan(plan)
    if plan["admission"]["verdict"] == "reject":
        raise typer.Exit(1)


def _local_plan(ctx: typer.Context, job_id: str, variables: dict[str, str]) -> dict[str, Any]:
    from jobhost.plan import Admission, admission, plan_run
    from jobhost.store import schedules as db

    settings = state(ctx).settings(watch=False, scheduler_enabled=False)
    job = scan(settings.apps_roots).require(job_id)
    store = open_store(ctx)
    try:
        override = db.load_overrides(store).get(job.id)
        waiting = store.history(HistoryQuery(statuses=WAITING, limit=500)).items
    finally:
        store.close()
    real = [e for e in waiting if not e.test]
    mine = [e for e in real if e.job_id == job.id]
    definition = job.definition

    def decide(values: dict[str, Any]) -> Admission:
        # The store's view: this job's recorded runs (concurrency keys and groups are
        # the server's to count; jobhost plan --server asks it).
        assert definition is not None
        return admission(
            definition,
            active=sum(1 for e in mine if e.status.active),
            queued=sum(1 for e in mine if e.status is ExecutionStatus.QUEUED),
            queued_total=sum(1 for e in real if e.status is ExecutionStatus.QUEUED),
            max_queue=settings.max_queue,
        )

    return asyncio.run(
        plan_run(
            job,
            variables,
            Principal.local(),
            settings=settings,
            override=override,
            decide=decide,
            draining=False,
            now=utcnow(),
        )
    )


def print_plan(plan: dict[str, Any]) -> None:
    """The plan as a short report."""
    admission = plan["admission"]
    verdict = admission["verdict"]
    colour = {"start": "green", "queue": "yellow"}.get(verdict, "red")
    where = f" at position {admission['position']}" if admission.get("position") else ""
    out.print(f"[bold]{escape(plan['job_id'])}[/bold]")
    out.print(
        f"If started now: [{colour}]{verdict}{where}[/{colour}] ({escape(admission['reason'])})"
    )
    schedule = plan["schedule"]
    if schedule["next"]:
        out.print(
            f"Schedule: {escape(str(schedule['expression']))} in {schedule['timezone']} "
            f"({schedule['source']})"
        )
        for fire in schedule["next"]:
            out.print(f"  {fire['local']}  ({fire['at']})", markup=False)
    else:
        reason = schedule.get("problem") or (
            "disabled" if schedule["expression"] else "not scheduled"
        )
        out.print(f"Schedule: none ({reason})", markup=False)
    init = plan["init"]
    if init["script"]:
        message = f": {init['message']}" if init.get("message") else ""
        out.print(f"Init script {init['script']}: {init['verdict']}{message}", markup=False)
    for problem in plan["problems"]:
        out.print(f"[red]problem:[/red] {escape(problem)}")
    if plan["variables"]:
        out.print("Variables:")
        for name, value in plan["variables"].items():
            out.print(f"  {name} = {value!r}", markup=False)
    if plan["argv"] is not None:
        out.print(f"Working directory: {plan['cwd']}", markup=False)
        out.print("Command: " + " ".join(_quoted(part) for part in plan["argv"]), markup=False)
        out.print("Environment:")
        for key, value in (plan["env"] or {}).items():
            out.print(f"  {key}={value}", markup=False)
    if plan["limits"]:
        shown = ", ".join(f"{k}={v}" for k, v in plan["limits"].items() if v is not None)
        out.print(f"Limits: {shown}", markup=False)


def _quoted(part: str) -> str:
    import shlex

    return shlex.quote(part)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)

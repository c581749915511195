"""``jobhost schedule show|set|enable|disable|clear``: schedule overrides.

With a server configured (``--server``, ``JOBHOST_SERVER`` or ``jobhost login``) the
verbs go through its API, so a running scheduler takes the change at once and the
server checks ``roles_schedule``. Without one they work on the local store as the
local superuser; a server started later reads the override from there. A change made
locally while a live server serves the same store is refused (its scheduler would not
see it until a restart): ``show`` still works, the changing verbs say to go through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from jobhost.catalog.definition import parse_job_id
from jobhost.cli.common import handle_errors, out, parse_vars, print_json, state, with_store
from jobhost.cli.local import with_engine
from jobhost.cli.remote import connect
from jobhost.client import plain
from jobhost.errors import Conflict
from jobhost.models import Principal

if TYPE_CHECKING:  # imported when a verb runs: the CLI starts fast without them
    from jobhost.engine import JobHost
    from jobhost.schedules import Schedules

app = typer.Typer(
    name="schedule",
    help="Show and change job schedules (stored overrides of job.json's default_schedule).",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="App/Job.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _with_scheduler(
    ctx: typer.Context, work: Callable[[Schedules, Principal], Awaitable[Any]]
) -> Any:
    from jobhost.schedules import Schedules

    async def go(engine: JobHost) -> Any:
        schedules = Schedules(engine)
        await schedules.load()
        return await work(schedules, Principal.local())

    return with_engine(ctx, go)


def _refuse_behind_a_live_server(ctx: typer.Context, job_id: str) -> None:
    """A local change would reach the store but not a running server's scheduler."""
    from jobhost.models import utcnow
    from jobhost.store.instances import live_instances

    servers = with_store(ctx, lambda store: live_instances(store, utcnow(), kind="server"))
    if servers:
        server = servers[0]
        raise Conflict(
            f"A JobHost server serves this data dir (instance {server.id[:8]} on host "
            f"{server.host}, pid {server.pid}); its scheduler would not see a schedule change "
            f"made here. Change it through the server: jobhost --server URL schedule ... "
            f"{job_id} (or jobhost login --server URL first)"
        )


def _render(schedules: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(schedules)
        return
    table = Table("Job", "Schedule", "Zone", "Enabled", "Source", "Next fire", "Last fire")
    for item in schedules:
        last = item["last_fire"]
        table.add_row(
            item["job_id"],
            item["schedule"] or "-",
            item["timezone"],
            # No schedule means nothing to enable: "-", not a "yes" that reads as active.
            ("yes" if item["enabled"] else "no") if item["schedule"] else "-",
            item["source"],
            (item["next_fires"] or ["-"])[0],
            f"{last['scheduled_for']} {last['outcome'] or 'claimed'}" if last else "-",
        )
    out.print(table)


@app.command("show")
@handle_errors
def show_cmd(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(metavar="[JOB_ID]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every job's schedule, or one job's with its next five fire times."""

    async def work(scheduler: Schedules, principal: Principal) -> list[dict[str, Any]]:
        if job_id is None:
            return await scheduler.list_schedules(principal)
        parse_job_id(job_id)
        return [await scheduler.get(job_id, principal)]

    if (remote := state(ctx).remote()) is not None:
        with connect(remote) as client:
            schedules = (
                plain(client.schedules()) if job_id is None else [plain(client.schedule(job_id))]
            )
    else:
        schedules = _with_scheduler(ctx, work)
    _render(schedules, as_json)
    if job_id is not None and not as_json:
        if schedules[0].get("description"):
            out.print(f"  when: {schedules[0]['description']}")
        if schedules[0].get("problem"):
            out.print(f"  problem: {schedules[0]['problem']}")
        for when in schedules[0]["next_fires"]:
            out.print(f"  next: {when}")


def _set(ctx: typer.Context, job_id: str, as_json: bool, **changes: Any) -> None:
    parse_job_id(job_id)
    if (remote := state(ctx).remote()) is not None:
        with connect(remote) as client:
            _render([plain(client.set_schedule(job_id, **changes))], as_json)
        return

    _refuse_behind_a_live_server(ctx, job_id)

    async def work(scheduler: Schedules, principal: Principal) -> dict[str, Any]:
        return await scheduler.set_override(job_id, principal, **changes)

    _render([_with_scheduler(ctx, work)], as_json)


@app.command("set")
@handle_errors
def set_cmd(
    ctx: typer.Context,
    job_id: JobArg,
    cron_expr: Annotated[
        str | None, typer.Option("--cron", help="Cron expression, e.g. '*/5 * * * *'.")
    ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA zone, e.g. Europe/Berlin.")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="A variable for scheduled runs: NAME=VALUE.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Override the schedule, zone and/or variables of a job (what is not given is kept)."""
    given = {"schedule": cron_expr, "timezone": tz, "variables": parse_vars(var) if var else None}
    _set(
        ctx, job_id, as_json, **{name: value for name, value in given.items() if value is not None}
    )


@app.command("enable")
@handle_errors
def enable_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Let the job's schedule fire again."""
    _set(ctx, job_id, as_json, enabled=True)


@app.command("disable")
@handle_errors
def disable_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Stop the job's schedule from firing (the job can still be started by hand)."""
    _set(ctx, job_id, as_json, enabled=False)


@app.command("clear")
@handle_errors
def clear_cmd(ctx: typer.Context, job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Remove the override: job.json's default_schedule applies again."""
    parse_job_id(job_id)
    if (remote := state(ctx).remote()) is not None:
        with connect(remote) as client:
            _render([plain(client.delete_schedule(job_id))], as_json)
        return

    _refuse_behind_a_live_server(ctx, job_id)

    async def work(scheduler: Schedules, principal: Principal) -> dict[str, Any]:
        return await scheduler.clear_override(job_id, principal)

    _render([_with_scheduler(ctx, work)], as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="schedule")

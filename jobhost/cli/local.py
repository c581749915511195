"""Verbs that work on this machine without a server: the CLI acts as local superuser
(whoever can run it can read the job files anyway). The run records (``history``,
``status``, ``output``) are read in ``jobhost.cli.history``.

``catalog``, ``test`` and ``run`` go to the server instead when one is configured (see
``CliState.remote``), with the same ``--json`` fields.

Locally, ``catalog`` and ``validate`` read the job folders and the store directly: no
engine, no executor, no reconciliation, no thread, so a server running on the same data
dir is never disturbed. ``run``, ``test`` and ``prune`` open an engine of their own,
registered as a ``cli`` instance with its own lease: it owns the runs it starts and
touches no other instance's runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from jobhost.catalog.definition import parse_job_id, validate_cron
from jobhost.catalog.discovery import Job, scan
from jobhost.cli import board
from jobhost.cli.common import (
    STATUS_STYLE,
    ending,
    err,
    fail,
    handle_errors,
    out,
    parse_vars,
    print_json,
    remote_verbs,
    state,
    with_store,
)
from jobhost.cli.scaffold import scaffold_job
from jobhost.errors import (
    BadRequest,
    InitHookFailed,
    InvalidDefinition,
    JobHostError,
    VariableError,
)
from jobhost.models import Execution, ExecutionStatus, Principal, Trigger

if TYPE_CHECKING:  # imported when a verb runs: the CLI starts fast without it
    from jobhost.engine import JobHost

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="A variable as NAME=VALUE (repeatable).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="The script gets JOBHOST_DRY_RUN=1 and should change nothing."),
]


def with_engine(ctx: typer.Context, work: Callable[[JobHost], Awaitable[T]]) -> T:
    """Open an engine of this process's own (a ``cli`` instance: no catalog watcher, no
    scheduler, no reconciliation of other instances' runs), run ``work``, close it."""
    from jobhost.engine import JobHost

    settings = state(ctx).settings(watch=False, scheduler_enabled=False)

    async def go() -> T:
        async with JobHost(settings, kind="cli") as engine:
            return await work(engine)

    return asyncio.run(go())


@handle_errors
def catalog_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every discovered job, valid or not (the server's catalog when one is set)."""
    if (server := state(ctx).remote()) is not None:
        remote_verbs().catalog(server, as_json)
        return
    settings = state(ctx).settings()
    catalog = scan(settings.apps_roots)
    jobs = list(catalog.values())
    entries = with_store(ctx, lambda store: board.local_entries(settings, jobs, store))
    if as_json:
        print_json(entries)
        return
    out.print(board.catalog_table(entries, problems=True))
    out.print(f"{len(catalog)} jobs, {sum(1 for j in catalog.values() if not j.valid)} invalid")


def validate_cmd(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="App/Job; all jobs when omitted.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check job folders; exits 3 when anything is invalid."""
    settings = state(ctx).settings()
    catalog = scan(settings.apps_roots)
    jobs: list[Job] = list(catalog.values())
    if job_id is not None:
        try:
            parse_job_id(job_id)
            jobs = [catalog.require(job_id)]
        except JobHostError as exc:
            fail(exc.message, exc.exit_code)
    if as_json:
        print_json([job.to_api() for job in jobs])
    else:
        for job in jobs:
            mark = "[green]✓[/green]" if job.valid else "[red]✗[/red]"
            out.print(f"{mark} {job.id}")
            for problem in job.errors:
                out.print(f"    [red]{problem}[/red]", markup=True, highlight=False)
            for warning in (*job.warnings, *job.advice(settings.channels)):
                out.print(f"    [yellow]warning:[/yellow] {warning}")
    if any(not job.valid for job in jobs):
        raise typer.Exit(3)


@handle_errors
def new_cmd(
    ctx: typer.Context,
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    job_name: Annotated[str, typer.Argument(metavar="JOB")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    schedule: Annotated[str | None, typer.Option("--schedule", help="Cron expression.")] = None,
    init_script: Annotated[
        bool, typer.Option("--init-script/--no-init-script", help="Also write init-job.py.")
    ] = True,
) -> None:
    """Scaffold apps/APP/jobs/JOB with a working Python script (never overwrites)."""
    parse_job_id(f"{app_name}/{job_name}")
    if schedule is not None and (problem := validate_cron(schedule)):
        raise BadRequest(f"--schedule {schedule!r}: {problem}")
    root = state(ctx).settings().apps_roots[0]
    folder = scaffold_job(
        root,
        app_name,
        job_name,
        display_name=display_name or job_name,
        description=description,
        schedule=schedule,
        init_script=init_script,
    )
    out.print(f"Created {folder}")
    out.print(f"Try it: jobhost test {app_name}/{job_name}")


@handle_errors
def test_cmd(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    var: VarOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate, run init, run the script with --test; print a checklist and the result."""
    parse_job_id(job_id)
    variables = parse_vars(var)
    if (server := state(ctx).remote()) is not None:
        remote_verbs().test(server, job_id, variables, as_json, dry_run=dry_run)
        return
    checks: list[tuple[bool, str]] = []

    async def work(engine: JobHost) -> Execution | None:
        job = engine.catalog.require(job_id)
        if not job.valid:
            checks.append((False, f"job.json: {'; '.join(job.errors)}"))
            return None
        checks.append((True, "job.json is valid and has every required field"))
        try:
            execution = await engine.test(
                job_id, variables, Principal.local(), trigger=Trigger.CLI, dry_run=dry_run
            )
        except InitHookFailed as exc:
            checks.append((False, f"init script rejected the variables: {exc.message}"))
            return None
        except (VariableError, InvalidDefinition) as exc:
            checks.append((False, exc.message))
            return None
        if job.init_script is not None:
            checks.append((True, f"{job.init_script.name} ran and accepted the variables"))
        for name, value in execution.variables.items():
            checks.append((True, f"Variable {name!r} = {value!r}"))
        if not as_json:
            _print_checks(checks, None, as_json)  # what passed so far, then the live output
            checks.clear()
            async for chunk in engine.follow(execution.id):
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
        final = await engine.wait(execution.id)
        ok = final.status is ExecutionStatus.SUCCEEDED
        checks.append((ok, _ending(final)))
        return final

    final = with_engine(ctx, work)
    _print_checks(checks, final, as_json)
    failed = not all(ok for ok, _ in checks) or (
        final is not None and final.status is not ExecutionStatus.SUCCEEDED
    )
    if failed:
        raise typer.Exit(1)


def _print_checks(checks: list[tuple[bool, str]], final: Execution | None, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "ok": all(ok for ok, _ in checks),
                "checks": [{"ok": ok, "message": message} for ok, message in checks],
                "execution": final.to_api() if final else None,
            }
        )
        return
    for ok, message in checks:
        out.print("[green]✓[/green] " if ok else "[red]✗[/red] ", end="")
        out.print(message, markup=False)
    if final is not None and final.result is not None:
        out.print("Result:", style="bold")
        out.print_json(json.dumps(final.result, default=str))


def _ending(execution: Execution) -> str:
    return ending(execution.to_api())


@handle_errors
def run_cmd(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    var: VarOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a job in the foreground, streaming its output; Ctrl-C stops it cleanly."""
    parse_job_id(job_id)
    variables = parse_vars(var)
    if (server := state(ctx).remote()) is not None:
        remote_verbs().run(server, job_id, variables, as_json, dry_run=dry_run)  # the server's run
        return

    async def work(engine: JobHost) -> Execution:
        principal = Principal.local()
        execution = await engine.start(
            job_id, variables, principal, trigger=Trigger.CLI, dry_run=dry_run
        )
        if not as_json:
            err.print(f"execution {execution.id} started", style="dim")
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[list[Execution]]] = []

        def interrupt() -> None:
            err.print("stopping…", style="yellow")
            by = f"{principal.username} (Ctrl-C in jobhost run)"
            stopping.append(loop.create_task(engine.stop(execution_id=execution.id, by=by)))

        loop.add_signal_handler(signal.SIGINT, interrupt)
        loop.add_signal_handler(signal.SIGTERM, interrupt)
        try:
            async for chunk in engine.follow(execution.id):
                if not as_json:
                    sys.stdout.buffer.write(chunk.data)
                    sys.stdout.flush()
            return await engine.wait(execution.id)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    final = with_engine(ctx, work)
    if as_json:
        print_json(final.to_api())
    else:
        err.print(_ending(final), style=STATUS_STYLE.get(final.status.value, ""))
    if final.status is not ExecutionStatus.SUCCEEDED:
        raise typer.Exit(1)


@handle_errors
def prune_cmd(ctx: typer.Context) -> None:
    """Delete history (and logs) past the retention settings."""
    deleted = with_engine(ctx, lambda engine: engine.prune())
    out.print(f"Deleted {len(deleted)} executions")


def register(app: typer.Typer) -> None:
    app.command("catalog")(catalog_cmd)
    app.command("validate")(validate_cmd)
    app.command("new")(new_cmd)
    app.command("test")(test_cmd)
    app.command("run")(run_cmd)
    app.command("prune")(prune_cmd)


__all__ = ["register"]

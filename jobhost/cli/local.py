"""Verbs that work on this machine without a server: the CLI acts as local superuser
(whoever can run it can read the job files anyway).

``catalog``, ``test``, ``run``, ``history``, ``status`` and ``output`` go to the server
instead when one is configured (see ``CliState.remote``), with the same ``--json`` fields.

Locally, the read verbs (``catalog``, ``validate``, ``history``, ``status``, ``output``)
read the store and the logs directly: no engine, no executor, no reconciliation, no
thread, so a server running on the same data dir is never disturbed. ``run``, ``test``
and ``prune`` open an engine of their own, registered as a ``cli`` instance with its own
lease: it owns the runs it starts and touches no other instance's runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from jobhost.catalog.definition import parse_job_id, validate_cron
from jobhost.catalog.discovery import Job, scan
from jobhost.cli import board
from jobhost.cli.common import (
    STATUS_STYLE,
    ending,
    err,
    execution_table,
    fail,
    handle_errors,
    out,
    parse_vars,
    print_execution,
    print_json,
    state,
)
from jobhost.cli.scaffold import scaffold_job
from jobhost.errors import (
    BadRequest,
    ExecutionNotFound,
    InitHookFailed,
    InvalidDefinition,
    JobHostError,
    VariableError,
)
from jobhost.models import Execution, ExecutionStatus, HistoryQuery, Principal, Trigger

if TYPE_CHECKING:  # imported when a verb runs: the CLI starts fast without it
    from types import ModuleType

    from jobhost.engine import JobHost
    from jobhost.store import SqlStore

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="A variable as NAME=VALUE (repeatable).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="The script gets JOBHOST_DRY_RUN=1 and should change nothing."),
]


def _remote() -> ModuleType:
    """The remote verbs, imported only when a server is configured: they bring the HTTP
    client and the API's models (about 0.15 s of imports a local command does not need)."""
    from jobhost.cli import remote

    return remote


def with_engine(ctx: typer.Context, work: Callable[[JobHost], Awaitable[T]]) -> T:
    """Open an engine of this process's own (a ``cli`` instance: no catalog watcher, no
    scheduler, no reconciliation of other instances' runs), run ``work``, close it."""
    from jobhost.engine import JobHost

    settings = state(ctx).settings(watch=False, scheduler_enabled=False)

    async def go() -> T:
        async with JobHost(settings, kind="cli") as engine:
            return await work(engine)

    return asyncio.run(go())


def open_store(ctx: typer.Context) -> SqlStore:
    """The local store for reading, migrated only when it is behind (a read verb on an
    up-to-date store takes no write lock)."""
    from jobhost.store import head_revision, make_store

    store = make_store(state(ctx).settings(watch=False, scheduler_enabled=False))
    try:
        if store.current_revision() != head_revision():
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def with_store(ctx: typer.Context, work: Callable[[SqlStore], T]) -> T:
    store = open_store(ctx)
    try:
        return work(store)
    finally:
        store.close()


@handle_errors
def catalog_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every discovered job, valid or not (the server's catalog when one is set)."""
    if (server := state(ctx).remote()) is not None:
        _remote().catalog(server, as_json)
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
        _remote().test(server, job_id, variables, as_json, dry_run=dry_run)
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
        _remote().run(server, job_id, variables, as_json, dry_run=dry_run)  # the server's run
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


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{option} takes an ISO-8601 time, got {value!r}") from None


@handle_errors
def history_cmd(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", help="App/Job")] = None,
    status: Annotated[list[str] | None, typer.Option("--status")] = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO-8601")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO-8601")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Past and current executions, newest first."""
    if (server := state(ctx).remote()) is not None:
        filters = {
            "job_id": job,
            "user": user,
            "statuses": status or [],
            "since": since,
            "until": until,
            "limit": limit,
        }
        _remote().history(server, filters, as_json)
        return
    try:
        statuses = tuple(ExecutionStatus(s) for s in status or [])
    except ValueError:
        choices = ", ".join(s.value for s in ExecutionStatus)
        raise BadRequest(f"--status must be one of {choices}, got {status!r}") from None
    query = HistoryQuery(
        job_id=job,
        user=user,
        statuses=statuses,
        since=_parse_time(since, "--since"),
        until=_parse_time(until, "--until"),
        limit=limit,
    )
    page = with_store(ctx, lambda store: store.history(query))
    executions = [e.to_api() for e in page.items]
    if as_json:
        print_json(executions)
        return
    out.print(execution_table(executions))


@handle_errors
def status_cmd(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="EXEC_ID")],
    as_json: JsonOpt = False,
) -> None:
    """One execution's record."""
    if (server := state(ctx).remote()) is not None:
        _remote().status(server, execution_id, as_json)
        return
    execution = with_store(ctx, lambda store: _stored(store, execution_id))
    if as_json:
        print_json(execution.to_api())
        return
    print_execution(execution.to_api())


@handle_errors
def output_cmd(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="EXEC_ID")],
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends (server).")
    ] = False,
) -> None:
    """Print an execution's captured output (from a byte offset)."""
    if (server := state(ctx).remote()) is not None:
        _remote().output(server, execution_id, offset, follow)
        return
    if follow:
        # A local engine only sees the runs of its own process; live runs belong to a server.
        raise BadRequest(
            "output --follow needs a server (jobhost login, or --server URL); "
            "locally, 'jobhost run' streams the output as it runs"
        )

    from jobhost.execution.launch import log_path
    from jobhost.execution.output import read_output

    execution = with_store(ctx, lambda store: _stored(store, execution_id))
    path = str(log_path(state(ctx).settings(), execution.id))
    position = offset
    while True:
        data, position = read_output(path, position, 1024 * 1024)
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _stored(store: SqlStore, execution_id: str) -> Execution:
    execution = store.get_execution(execution_id)
    if execution is None:
        raise ExecutionNotFound(f"No execution {execution_id!r}")
    return execution


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
    app.command("history")(history_cmd)
    app.command("status")(status_cmd)
    app.command("output")(output_cmd)
    app.command("prune")(prune_cmd)


__all__ = ["register"]

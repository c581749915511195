"""The run records on this machine: ``history``, ``status`` and ``output``.

With a server configured (see ``CliState.remote``) they ask it, with the same ``--json``
fields. Locally they read the store and the logs directly: no engine, no executor, no
reconciliation, no thread, so a server running on the same data dir is never disturbed.
A read imports what it reads with: the store, not the catalog or the engine.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from jobhost.cli.common import (
    execution_table,
    handle_errors,
    out,
    print_execution,
    print_json,
    remote_verbs,
    state,
    with_store,
)
from jobhost.errors import BadRequest, ExecutionNotFound
from jobhost.models import Execution, ExecutionStatus, HistoryQuery

if TYPE_CHECKING:
    from jobhost.store import SqlStore

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


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
        remote_verbs().history(server, filters, as_json)
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
        remote_verbs().status(server, execution_id, as_json)
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
        remote_verbs().output(server, execution_id, offset, follow)
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


def register(app: typer.Typer) -> None:
    app.command("history")(history_cmd)
    app.command("status")(status_cmd)
    app.command("output")(output_cmd)


__all__ = ["register"]

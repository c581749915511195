"""Verbs that talk to a JobHost server, and the remote half of the local verbs.

The server is ``--server``/``JOBHOST_SERVER`` or the one ``jobhost login`` stored;
the token is ``JOBHOST_TOKEN`` or the stored one. Every decision (permissions,
validation) is the server's: these verbs parse, call ``jobhost.client`` and render.
Ctrl-C while following a run detaches from it; the run goes on on the server.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from jobhost.cli.board import catalog_table
from jobhost.cli.common import (
    Credentials,
    Remote,
    credentials_path,
    ending,
    err,
    execution_table,
    handle_errors,
    load_credentials,
    out,
    parse_vars,
    print_execution,
    print_json,
    remove_credentials,
    save_credentials,
    state,
    styled_status,
)
from jobhost.client import Client, plain
from jobhost.errors import BadRequest, InitHookFailed, InvalidDefinition, VariableError

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="A variable as NAME=VALUE (repeatable).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="The script gets JOBHOST_DRY_RUN=1 and should change nothing."),
]
FollowOpt = Annotated[
    bool, typer.Option("--follow", "-f", help="Stream the output until the run ends.")
]
ExecOpt = Annotated[
    str | None, typer.Option("--execution", help="Act on this execution instead of the job.")
]
OptionalJob = Annotated[str | None, typer.Argument(metavar="[JOB_ID]", help="App/Job")]


def connect(remote: Remote | None) -> Client:
    """A client for the configured server, or a message saying how to configure one."""
    if remote is None:
        raise BadRequest(
            "No JobHost server configured: run 'jobhost login --server URL', "
            "or give --server URL (or JOBHOST_SERVER)"
        )
    return Client(remote.server, remote.token)


def client_for(ctx: typer.Context) -> Client:
    return connect(state(ctx).remote())


def follow_run(client: Client, execution: dict[str, Any], *, show: bool) -> dict[str, Any]:
    """Stream an execution's output to stdout (when ``show``) and return it once ended."""
    final: dict[str, Any] | None = None
    try:
        for event in client.follow(str(execution["id"])):
            if event.event == "output" and show and isinstance(event.data, dict):
                sys.stdout.write(str(event.data.get("output", "")))
                sys.stdout.flush()
            elif event.event == "end" and isinstance(event.data, dict):
                final = event.data
    except KeyboardInterrupt:
        err.print(
            f"detached; {execution['id']} goes on on the server "
            f"(jobhost stop --execution {execution['id']})",
            markup=False,
        )
        raise typer.Exit(130) from None
    return final if final is not None else plain(client.status(str(execution["id"])))


def _finish(final: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(final)
    else:
        err.print(ending(final), markup=False)
    if final.get("status") != "succeeded":
        raise typer.Exit(1)


# --------------------------------------------------------------------- auth
@handle_errors
def login_cmd(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option("--server", help="The server's URL.")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Sign in and keep an API token for this machine (in a 0600 credentials file)."""
    remote = state(ctx).remote()
    url = server or (remote.server if remote else None)
    if not url:
        raise BadRequest("Give the server to sign in to: jobhost login --server URL")
    if username is None:
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise BadRequest("An empty password was given")
    previous = load_credentials()
    with Client(url) as client:
        info = plain(client.login(username, password))
        created = plain(client.create_token(f"cli@{socket.gethostname()}"))
        with contextlib.suppress(Exception):  # the session was only needed for the token
            client.logout()
    path = save_credentials(
        Credentials(
            server=client.base_url,
            token=str(created["token"]),
            token_id=created.get("id"),
            username=str(info.get("username", username)),
        )
    )
    if previous is not None and previous.token_id and previous.server == client.base_url:
        _revoke_quietly(previous)
    roles = ", ".join(info.get("roles") or []) or "no roles"
    out.print(f"Signed in to {client.base_url} as {info.get('username', username)} ({roles})")
    out.print(f"Token stored in {path}", markup=False)


def _revoke_quietly(credentials: Credentials) -> str | None:
    """Revoke a stored token on its server; the problem in words when that failed."""
    if not credentials.token_id:
        return "its ID is unknown"
    try:
        with Client(credentials.server, credentials.token) as client:
            client.revoke_token(credentials.token_id)
    except Exception as exc:  # logging out locally must work even if the server is gone
        return str(getattr(exc, "message", exc))
    return None


@handle_errors
def logout_cmd() -> None:
    """Revoke the stored token on the server and forget it."""
    stored = load_credentials()
    if stored is None:
        out.print(f"Not signed in ({credentials_path()} does not exist)", markup=False)
        return
    problem = _revoke_quietly(stored)
    remove_credentials()
    out.print(f"Signed out of {stored.server}", markup=False)
    if problem:
        err.print(f"warning: the token could not be revoked: {problem}", markup=False)


# --------------------------------------------------------------------- runs
@handle_errors
def start_cmd(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="App/Job")],
    var: VarOpt = None,
    follow: FollowOpt = False,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Retry-safe: one run per key.")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Start then: ISO 8601 with offset, e.g. 2026-12-24T06:00+01:00."),
    ] = None,
    delay: Annotated[
        str | None, typer.Option("--in", help="Start after this delay: 90s, 15m, 2h, 1d.")
    ] = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a job on the server (202: it is queued or running when this returns)."""
    variables = parse_vars(var)
    if at is not None and delay is not None:
        raise BadRequest("Give --at or --in, not both")
    delay_seconds = parse_delay(delay) if delay is not None else None
    with client_for(ctx) as client:
        execution = plain(
            client.start(
                job_id,
                variables,
                idempotency_key=idempotency_key,
                at=at,
                delay_seconds=delay_seconds,
                dry_run=dry_run,
            )
        )
        if execution["status"] == "scheduled":
            if as_json:
                print_json(execution)
            else:
                out.print(
                    f"{execution['id']} {execution['job_id']} scheduled for {execution['due_at']}"
                )
            return
        _report_started(client, execution, follow, as_json)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_delay(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` or plain seconds (``90``) as seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise BadRequest(f"--in must be a delay such as 90s, 15m, 2h or 1d, got {text!r}") from None
    if not seconds > 0:
        raise BadRequest(f"--in must be more than zero, got {text!r}")
    return seconds


def _report_started(client: Client, execution: dict[str, Any], follow: bool, as_json: bool) -> None:
    if not follow:
        if as_json:
            print_json(execution)
        else:
            dry = " (dry run)" if execution.get("dry_run") else ""
            out.print(f"{execution['id']} {execution['job_id']} {execution['status']}{dry}")
        return
    if not as_json:
        err.print(f"execution {execution['id']} started", style="dim")
    _finish(follow_run(client, execution, show=not as_json), as_json)


@handle_errors
def stop_cmd(
    ctx: typer.Context,
    job_id: OptionalJob = None,
    execution: ExecOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Wait until the runs have ended.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop one execution (--execution) or every running execution of a job."""
    if job_id is None and execution is None:
        raise BadRequest("Give a JOB_ID or --execution EXEC_ID to stop")
    with client_for(ctx) as client:
        stopped = plain(client.stop(job_id=job_id, execution_id=execution))
        if follow:
            stopped = [follow_run(client, e, show=False) for e in stopped]
    if as_json:
        print_json(stopped)
        return
    for e in stopped:
        out.print(f"{e['id']} {e['job_id']} {styled_status(str(e['status']))}")


@handle_errors
def restart_cmd(
    ctx: typer.Context,
    job_id: OptionalJob = None,
    execution: ExecOpt = None,
    var: VarOpt = None,
    follow: FollowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop the job's run and start it again (same variables unless --var is given)."""
    if job_id is None and execution is None:
        raise BadRequest("Give a JOB_ID or --execution EXEC_ID to restart")
    variables = parse_vars(var) if var else None
    with client_for(ctx) as client:
        started = plain(client.restart(job_id=job_id, execution_id=execution, variables=variables))
        _report_started(client, started, follow, as_json)


@handle_errors
def running_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Executions queued or running on the server that you may view."""
    with client_for(ctx) as client:
        executions = plain(client.running())
    if as_json:
        print_json(executions)
        return
    out.print(execution_table(executions))
    out.print(f"{len(executions)} running")


# --------------------------------------------------------------------- the local verbs, remotely
def catalog(remote: Remote, as_json: bool) -> None:
    with connect(remote) as client:
        jobs = plain(client.catalog())
    if as_json:
        print_json(jobs)
        return
    out.print(catalog_table(jobs))
    out.print(f"{len(jobs)} jobs on {remote.server}", markup=False)


def status(remote: Remote, execution_id: str, as_json: bool) -> None:
    with connect(remote) as client:
        execution = plain(client.status(execution_id))
    if as_json:
        print_json(execution)
    else:
        print_execution(execution)


def output(remote: Remote, execution_id: str, offset: int, follow: bool) -> None:
    with connect(remote) as client:
        if follow:
            try:
                for event in client.follow(execution_id, offset):
                    if event.event == "output" and isinstance(event.data, dict):
                        sys.stdout.write(str(event.data.get("output", "")))
                        sys.stdout.flush()
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        for text in _pages(client, execution_id, offset):
            sys.stdout.write(text)
        sys.stdout.flush()


def _pages(client: Client, execution_id: str, offset: int) -> Iterator[str]:
    position = offset
    while True:
        chunk = plain(client.output(execution_id, position, 1024 * 1024))
        if not chunk.get("output"):
            return
        yield str(chunk["output"])
        position = int(chunk["next_offset"])


def history(remote: Remote, filters: dict[str, Any], as_json: bool) -> None:
    with connect(remote) as client:
        page = plain(client.history(**filters))
    executions = list(page["executions"])
    if as_json:
        print_json(executions)
        return
    out.print(execution_table(executions))


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run(
    remote: Remote,
    job_id: str,
    variables: dict[str, str],
    as_json: bool,
    *,
    dry_run: bool = False,
) -> None:
    """``jobhost run`` through the server: start, stream, and on Ctrl-C (or SIGTERM) stop
    the run on the server and stream it to its end; a second Ctrl-C detaches."""
    with connect(remote) as client:
        execution = plain(client.start(job_id, variables, dry_run=dry_run))
        execution_id = str(execution["id"])
        if not as_json:
            err.print(f"execution {execution_id} started on {remote.server}", style="dim")
        previous = signal.signal(signal.SIGTERM, _interrupt)
        position = 0
        final: dict[str, Any] | None = None
        stopping = False
        try:
            while final is None:
                try:
                    for event in client.follow(execution_id, position):
                        if event.event == "output" and isinstance(event.data, dict):
                            position = int(event.data.get("next_offset", position))
                            if not as_json:
                                sys.stdout.write(str(event.data.get("output", "")))
                                sys.stdout.flush()
                        elif event.event == "end" and isinstance(event.data, dict):
                            final = event.data
                    if final is None:
                        final = plain(client.status(execution_id))
                except KeyboardInterrupt:
                    if stopping:
                        err.print(f"detached; {execution_id} goes on on the server", markup=False)
                        raise typer.Exit(130) from None
                    stopping = True
                    err.print("stopping…", style="yellow")
                    client.stop(execution_id=execution_id)
        finally:
            signal.signal(signal.SIGTERM, previous)
    assert final is not None  # the loop ends only with it
    _finish(final, as_json)


def test(
    remote: Remote,
    job_id: str,
    variables: dict[str, str],
    as_json: bool,
    *,
    dry_run: bool = False,
) -> None:
    """The server-side test run, as the same checklist the local ``test`` prints."""
    checks: list[tuple[bool, str]] = []
    final: dict[str, Any] | None = None
    with connect(remote) as client:
        try:
            execution = plain(client.test(job_id, variables, dry_run=dry_run))
        except (InitHookFailed, VariableError, InvalidDefinition) as exc:
            checks.append((False, exc.message))
        else:
            checks.append((True, f"{job_id} accepted the variables on {remote.server}"))
            for name, value in (execution.get("variables") or {}).items():
                checks.append((True, f"Variable {name!r} = {value!r}"))
            final = follow_run(client, execution, show=not as_json)
            checks.append((final.get("status") == "succeeded", ending(final)))
    ok = all(passed for passed, _ in checks)
    if as_json:
        print_json(
            {
                "ok": ok,
                "checks": [{"ok": passed, "message": text} for passed, text in checks],
                "execution": final,
            }
        )
    else:
        for passed, text in checks:
            out.print("[green]✓[/green] " if passed else "[red]✗[/red] ", end="")
            out.print(text, markup=False)
        if final is not None and final.get("result") is not None:
            out.print("Result:", style="bold")
            out.print_json(data=final["result"])
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("login")(login_cmd)
    app.command("logout")(logout_cmd)
    app.command("start")(start_cmd)
    app.command("stop")(stop_cmd)
    app.command("restart")(restart_cmd)
    app.command("running")(running_cmd)
    from jobhost.cli import admin  # admin builds on this module's helpers

    admin.register(app)


__all__ = ["catalog", "history", "output", "register", "status", "test"]

"""What every CLI verb shares: settings from the global options, output, error exits."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from jobhost.cli.location import StoreLocation, Unusual, store_location
from jobhost.errors import BadRequest, JobHostError, NotAuthenticated

if TYPE_CHECKING:  # imported when a verb runs: the CLI starts fast without them
    from types import ModuleType

    from jobhost.config import Settings
    from jobhost.store import SqlStore

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class CliState:
    apps: list[Path] | None = None
    data_dir: Path | None = None
    database_url: str | None = None
    server: str | None = None

    def remote(self) -> Remote | None:
        """The server the verbs should talk to, or None to work locally.

        ``--server`` or ``JOBHOST_SERVER`` first; else the stored credentials of
        ``jobhost login``, unless a local option (``--apps``, ``--data-dir``,
        ``--database-url``) was given, which asks for this machine's state explicitly.
        ``JOBHOST_TOKEN`` overrides the stored token. The stored token is only sent to
        the server it was issued by.
        """
        stored = load_credentials()
        server = self.server or os.environ.get("JOBHOST_SERVER") or None
        if server is None:
            if stored is None or self.apps or self.data_dir or self.database_url:
                return None
            server = stored.server
        server = server.rstrip("/")
        token = os.environ.get("JOBHOST_TOKEN") or None
        if token is None and stored is not None and stored.server == server:
            token = stored.token
        return Remote(server=server, token=token)

    def settings(self, **overrides: Any) -> Settings:
        from jobhost.config import Settings  # pydantic-settings: only for verbs that need it

        given: dict[str, Any] = dict(overrides)
        if self.apps:
            given["apps_roots"] = self.apps
        if self.data_dir is not None:
            given["data_dir"] = self.data_dir
        if self.database_url is not None:
            given["database_url"] = self.database_url
        return Settings(**given)

    def store(self) -> StoreLocation | Settings:
        """Where the store is: read cheaply, or by ``Settings`` when only it can tell."""
        try:
            return store_location(self.data_dir, self.database_url)
        except Unusual:
            return self.settings()


@dataclass(frozen=True)
class Remote:
    server: str
    token: str | None


@dataclass(frozen=True)
class Credentials:
    """What ``jobhost login`` keeps: the server and a bearer token (plus who and its ID)."""

    server: str
    token: str
    token_id: str | None = None
    username: str | None = None


def credentials_path() -> Path:
    """``JOBHOST_CREDENTIALS``, else ``$XDG_CONFIG_HOME/jobhost/credentials.json``
    (``~/.config`` when unset)."""
    override = os.environ.get("JOBHOST_CREDENTIALS")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobhost" / "credentials.json"


def load_credentials() -> Credentials | None:
    """The stored credentials, or None when there are none (or they are unreadable)."""
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        err.print(f"warning: ignoring {path}: {exc}", markup=False, highlight=False)
        return None
    if not isinstance(data, dict) or not data.get("server") or not data.get("token"):
        return None
    return Credentials(
        server=str(data["server"]).rstrip("/"),
        token=str(data["token"]),
        token_id=data.get("token_id"),
        username=data.get("username"),
    )


def save_credentials(credentials: Credentials) -> Path:
    """Write the credentials file, mode 0600 from the moment it exists (then renamed
    over the old one, so a reader never sees half a file)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = json.dumps(
        {
            "server": credentials.server,
            "token": credentials.token,
            "token_id": credentials.token_id,
            "username": credentials.username,
        },
        indent=2,
    )
    # O_EXCL: never reuse a file someone else created (with wider permissions).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow the mode; be explicit anyway
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove_credentials() -> bool:
    """Delete the credentials file; True if there was one."""
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def state(ctx: typer.Context) -> CliState:
    obj = ctx.obj
    return obj if isinstance(obj, CliState) else CliState()


def remote_verbs() -> ModuleType:
    """The remote verbs, imported only when a server is configured: they bring the HTTP
    client and the API's models (about 0.15 s of imports a local command does not need)."""
    from jobhost.cli import remote

    return remote


def open_store(ctx: typer.Context) -> SqlStore:
    """The local store for reading, migrated only when it is behind (a read verb on an
    up-to-date store takes no write lock)."""
    from jobhost.store import head_revision, make_store

    store = make_store(state(ctx).store())
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


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a JobHostError into its message on stderr and its exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except JobHostError as exc:
            err.print(f"error: {exc.message}", markup=False, highlight=False)
            if isinstance(exc.details, dict) and exc.details:
                for name, problem in exc.details.items():
                    if isinstance(problem, str):
                        err.print(f"  {name}: {problem}", markup=False, highlight=False)
            if isinstance(exc, NotAuthenticated):
                err.print("Sign in again with: jobhost login --server URL", markup=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def parse_vars(items: list[str] | None) -> dict[str, str]:
    """``--var NAME=VALUE`` (repeatable); the value may contain ``=``."""
    values: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadRequest(f"--var takes NAME=VALUE, got {item!r}")
        values[name] = value
    return values


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "lost": "red",
    "rejected": "red",
    "stopped": "yellow",
    "stopping": "yellow",
    "running": "cyan",
}


def styled_status(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def execution_table(executions: list[dict[str, Any]]) -> Table:
    """Executions (``Execution.to_api()`` dicts) as a table for people."""
    table = Table("Status", "Trigger", "User", "Started", "Took", "Exit")
    stops = any(e.get("stopped_by") for e in executions)
    if stops:  # only when a run in the list was stopped: otherwise an empty column
        table.add_column("Stopped by")
    # IDs are what people copy into the next command: never truncated or wrapped.
    table.add_column("Execution", no_wrap=True, min_width=32)
    table.add_column("Job", no_wrap=True)
    for e in executions:
        started = str(e.get("started_at") or "")
        took = e.get("duration_seconds")
        table.add_row(
            styled_status(str(e["status"])),
            str(e.get("trigger") or "") + (" (dry run)" if e.get("dry_run") else ""),
            str(e.get("user") or ""),
            started[:19].replace("T", " "),
            f"{took:.2f}s" if isinstance(took, int | float) else "",
            "" if e.get("exit_code") is None else str(e["exit_code"]),
            *([str(e.get("stopped_by") or "")] if stops else []),
            str(e["id"]),
            str(e["job_id"]),
        )
    return table


def print_execution(execution: dict[str, Any]) -> None:
    """One execution as ``key: value`` lines, empty fields left out."""
    for key, value in execution.items():
        if value not in (None, {}, ""):
            out.print(f"[bold]{key}[/bold]: ", end="")
            out.print(
                value if isinstance(value, str) else json.dumps(value, default=str), markup=False
            )


def ending(execution: dict[str, Any]) -> str:
    """``Job script succeeded (exit 0, 1.20 s)``, with the error when there is one."""
    took = execution.get("duration_seconds")
    took_text = f"{took:.2f} s" if took else "-"
    code, signal = execution.get("exit_code"), execution.get("exit_signal")
    detail = f"signal {signal}" if signal else (f"exit {code}" if code is not None else "")
    text = f"Job script {execution['status']} ({detail or 'no exit code'}, {took_text})"
    error = execution.get("error")
    return f"{text}: {error}" if error else text

"""The ``jobhost`` command.

Global options come before the verb: ``jobhost --apps DIR [--apps DIR2] --data-dir DIR VERB``
(environment: ``JOBHOST_APPS`` with roots separated by ``:``, ``JOBHOST_DATA_DIR``).
Exit codes: 0 success; the error's ``exit_code`` (see ``jobhost.errors``) when input was
rejected; 1 when a run did not succeed; 3 when validation found problems.

Start-up: a verb's module (and what it imports: the engine, the HTTP client, the web
server...) is imported only when that verb runs, so ``jobhost --help`` and every verb pay
for their own imports only. The list ``jobhost --help`` prints comes from ``VERBS`` below;
``tests/test_cli_startup.py`` checks it against the verbs the modules register.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from jobhost.cli.coercion import plain_values

# Verb -> (module in jobhost.cli whose ``register(app)`` adds it, the line --help shows),
# in the order --help lists them. A new verb: register it in its module and add it here.
VERBS: dict[str, tuple[str, str]] = {
    "catalog": (
        "local",
        "List every discovered job, valid or not (the server's catalog when one is set).",
    ),
    "validate": ("local", "Check job folders; exits 3 when anything is invalid."),
    "new": ("local", "Scaffold apps/APP/jobs/JOB with a working Python script (never overwrites)."),
    "test": (
        "local",
        "Validate, run init, run the script with --test; print a checklist and the result.",
    ),
    "plan": (
        "plan",
        "What a start would do now: next fires, argv, env, init verdict, limits, admission.",
    ),
    "run": ("local", "Run a job in the foreground, streaming its output; Ctrl-C stops it cleanly."),
    "history": ("history", "Past and current executions, newest first."),
    "status": ("history", "One execution's record."),
    "output": ("history", "Print an execution's captured output (from a byte offset)."),
    "prune": ("local", "Delete history (and logs) past the retention settings."),
    "login": (
        "remote",
        "Sign in and keep an API token for this machine (in a 0600 credentials file).",
    ),
    "logout": ("remote", "Revoke the stored token on the server and forget it."),
    "start": (
        "remote",
        "Start a job on the server (202: it is queued or running when this returns).",
    ),
    "stop": ("remote", "Stop one execution (--execution) or every running execution of a job."),
    "restart": (
        "remote",
        "Stop the job's run and start it again (same variables unless --var is given).",
    ),
    "running": ("remote", "Executions queued or running on the server that you may view."),
    "audit": ("remote", "The audit trail, newest first (superusers only)."),
    "serve": (
        "serve",
        "Serve the REST API and the web UI (one process; Ctrl-C or SIGTERM to stop).",
    ),
    "instances": (
        "serve",
        "The servers and local runs registered on this store, with their leases.",
    ),
    "drain": ("serve", "Drain the server for an upgrade: no new starts or fires, then it exits 0."),
    "resume": ("serve", "End a drain: the server starts runs and fires schedules again."),
    "worker": ("worker", "Run executions for a JobHost server that uses the Celery executor."),
    "schedule": (
        "schedule",
        "Show and change job schedules (stored overrides of job.json's default_schedule).",
    ),
    "hook": ("hooks", 'A job\'s webhook: a secret URL that starts it (job.json needs "webhook").'),
    "users": ("remote", "Users and their roles (superusers only)."),
    "tokens": ("remote", "API tokens for scripts and the CLI."),
    "passwd": ("remote", "Change your own password on the server (the current one is asked)."),
}
MODULES = ("local", "history", "plan", "hooks", "schedule", "remote", "serve", "worker")


def load_verbs(*modules: str) -> dict[str, Any]:
    """The click commands that ``modules`` register, by verb (imports those modules)."""
    verbs = typer.Typer()
    for module in modules:
        import_module(f"jobhost.cli.{module}").register(verbs)
    commands = dict(typer.main.get_group(verbs).commands)
    for command in commands.values():
        _plain_help(command)
    return commands


def _plain_help(command: Any) -> None:
    """Help and usage errors as plain text: rich's help renderer alone costs more to import
    than the whole ``jobhost --help`` may take."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


class LazyVerbs(TyperGroup):
    """The root group: imports a verb's module when the verb is resolved, not before."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(VERBS) + [name for name in self.commands if name not in VERBS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            if self._listing and cmd_name in VERBS:  # --help: the one line is enough
                return TyperCommand(name=cmd_name, help=VERBS[cmd_name][1])
            wanted = (VERBS[cmd_name][0],) if cmd_name in VERBS else MODULES
            self.commands.update(load_verbs(*wanted))
        return self.commands.get(cmd_name)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_values(self, ctx)  # the global options
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in VERBS and args[0] not in self.commands:
            self.commands.update(load_verbs(*MODULES))  # for "did you mean" and unlisted verbs
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            plain_values(command, ctx)
        return name, command, rest


app = typer.Typer(
    name="jobhost",
    cls=LazyVerbs,
    rich_markup_mode=None,
    help="Discover, run, schedule and watch the jobs that live next to your apps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    apps: Annotated[
        list[Path] | None,
        typer.Option("--apps", help="An apps root (repeatable). Env: JOBHOST_APPS (a:b)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data folder. Env: JOBHOST_DATA_DIR.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="SQLAlchemy URL; default: SQLite in the data dir."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Talk to this JobHost server. Env: JOBHOST_SERVER."),
    ] = None,
) -> None:
    from jobhost.cli.common import CliState

    ctx.obj = CliState(apps=apps, data_dir=data_dir, database_url=database_url, server=server)


def main() -> None:
    app()

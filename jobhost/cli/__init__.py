"""The ``jobhost`` command.

Global options come before the verb: ``jobhost --apps DIR [--apps DIR2] --data-dir DIR VERB``
(environment: ``JOBHOST_APPS`` with roots separated by ``:``, ``JOBHOST_DATA_DIR``).
Exit codes: 0 success; the error's ``exit_code`` (see ``jobhost.errors``) when input was
rejected; 1 when a run did not succeed; 3 when validation found problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobhost.cli import local, remote, schedule, serve, worker
from jobhost.cli.common import CliState

app = typer.Typer(
    name="jobhost",
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
    ctx.obj = CliState(apps=apps, data_dir=data_dir, database_url=database_url, server=server)


local.register(app)
schedule.register(app)
remote.register(app)
serve.register(app)
worker.register(app)


def main() -> None:
    app()

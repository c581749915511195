"""``jobhost worker``: a Celery worker that runs executions sent by a JobHost server.

Run it on every worker machine (see docs/scaling-out.md). It takes the broker from the
settings (``celery_broker_url``, env ``JOBHOST_CELERY_BROKER_URL``), like the server.
"""

from __future__ import annotations

from typing import Annotated

import typer

from jobhost.cli.common import handle_errors, state


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def worker(
        ctx: typer.Context,
        queue: Annotated[
            list[str] | None,
            typer.Option("--queue", "-Q", help="Queue to take runs from (repeatable)."),
        ] = None,
        concurrency: Annotated[
            int | None,
            typer.Option("--concurrency", "-c", min=1, help="Runs at once; default: CPUs."),
        ] = None,
        loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")] = (
            "info"
        ),
    ) -> None:
        """Run executions for a JobHost server that uses the Celery executor."""
        from jobhost.worker import DEFAULT_QUEUE, make_app

        settings = state(ctx).settings()
        argv = ["worker", "--queues", ",".join(queue or [DEFAULT_QUEUE]), "--loglevel", loglevel]
        # Gossip and mingle synchronise worker state JobHost does not use: skip the chatter.
        argv += ["--without-gossip", "--without-mingle"]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        make_app(settings.celery_broker_url).worker_main(argv)

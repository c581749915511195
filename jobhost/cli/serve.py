"""``jobhost serve``: the web server (API + UI) in one process, with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from jobhost.cli.common import err, fail, handle_errors, state

HANDLED = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """Prints where it serves once the engine is open and the socket is bound."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which makes the
        # process die "killed by signal"; a completed graceful shutdown should exit 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        app: Any = self.config.app
        engine = app.state.engine
        port = self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        host = self.config.host

        # Other servers on the store read the output of this one's runs here.
        where = engine.settings.node if host in ("0.0.0.0", "::", "") else host
        await engine.advertise(f"http://{f'[{where}]' if ':' in where else where}:{port}")

        async def exit_after_drain() -> None:
            await engine.exit_requested.wait()
            self.should_exit = True

        self._drain_watch = asyncio.get_running_loop().create_task(exit_after_drain())
        err.print(
            f"JobHost serving {len(engine.catalog)} jobs at http://{host}:{port}/ "
            "— sign in as admin",
            markup=False,
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    from jobhost.cli import instances

    instances.register(app)

    @app.command()
    @handle_errors
    def serve(
        ctx: typer.Context,
        host: Annotated[
            str | None, typer.Option("--host", help="Address to bind. Env: JOBHOST_HOST.")
        ] = None,
        port: Annotated[
            int | None, typer.Option("--port", help="Port to bind. Env: JOBHOST_PORT.")
        ] = None,
        apps: Annotated[
            list[Path] | None, typer.Option("--apps", help="An apps root (repeatable).")
        ] = None,
        data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data folder.")] = None,
    ) -> None:
        """Serve the REST API and the web UI (one process; Ctrl-C or SIGTERM to stop)."""
        from jobhost.server import create_app

        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        if apps:
            overrides["apps_roots"] = apps
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        settings = state(ctx).settings(**overrides)
        if apps:
            settings = settings.model_copy(update={"apps_roots": apps})
        if data_dir is not None:
            settings = settings.model_copy(update={"data_dir": data_dir})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _migrate_apart(settings)
        web = create_app(settings)
        config = uvicorn.Config(
            web,
            host=settings.host,
            port=settings.port,
            lifespan="on",
            ws="none",  # no WebSocket route: its protocol module is memory for nothing
            log_level="info",
            # A line per request costs ~90 µs of the ~600 µs a small read takes; every
            # action that matters is in the audit log. Opt in with access_log = true.
            access_log=settings.access_log,
            # Live streams (SSE) never end by themselves; do not wait on them forever.
            timeout_graceful_shutdown=5,
        )
        if settings.access_log:  # a webhook's URL is its credential: never in a log line
            import logging

            from jobhost.hooks import HookTokenFilter

            logging.getLogger("uvicorn.access").addFilter(HookTokenFilter())
        server = _Server(config)
        server.run()
        if not server.started:
            raise typer.Exit(1)


def _migrate_apart(settings: Any) -> None:
    """Bring the store to the current schema in a child process before serving, so the
    server never holds Alembic (``SqlStore.migrate_apart``)."""
    from jobhost.store import make_store

    store = make_store(settings)
    try:
        store.migrate_apart()
    except RuntimeError as exc:  # the store is unreachable or refuses the migration
        fail(str(exc), 2)
    finally:
        store.close()

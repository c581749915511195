"""The app factory: ``create_app(settings)`` → a FastAPI app whose lifespan runs the engine.

Embedding: Starlette does not run the lifespan of a *mounted* app, so a host application
that mounts JobHost under a prefix composes JobHost's lifespan into its own with
``jobhost_lifespan`` (README, "Embedding")::

    jobs = create_app(Settings(apps_roots=["apps"], data_dir=".data"))
    host = FastAPI(lifespan=jobhost_lifespan(jobs))
    host.mount("/jobs", jobs)
"""

from __future__ import annotations

import gc
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobhost.config import Settings
from jobhost.engine import JobHost
from jobhost.server.adhoc import AdhocRunner
from jobhost.server.auth import Authenticator
from jobhost.server.contract import install_contract
from jobhost.server.errors import install_error_handlers
from jobhost.server.fastreads import FastReads
from jobhost.server.limits import BodySizeLimit, LoginLimiter
from jobhost.server.metrics import LoginCounter, Metrics
from jobhost.server.metrics import router as metrics_router
from jobhost.server.routes import routers
from jobhost.server.static import UiFiles
from jobhost.server.views import ExecutionViews

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Encoded once: this runs on every response.
_RAW_SECURITY_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """ASGI middleware: the strict CSP and friends on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}  # a route's own policy wins
                headers.extend(h for h in _RAW_SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


NOT_STARTED = (
    "JobHost's lifespan has not run, so its engine is not open. A host application that "
    "mounts create_app(...) must run it: FastAPI(lifespan=jobhost_lifespan(jobs_app)) "
    "(see the README, 'Embedding')"
)


class RequireLifespan:
    """ASGI middleware: a clear 503 instead of a 500 when the app is served (typically
    mounted under a prefix) without its lifespan having run."""

    def __init__(self, app: ASGIApp, *, started: Callable[[], bool]) -> None:
        self.app = app
        self.started = started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.started():
            response = JSONResponse(
                {"error": {"code": "not_started", "message": NOT_STARTED, "details": {}}},
                status_code=503,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def jobhost_lifespan(
    *apps: FastAPI, lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for a host application that mounts JobHost apps: it opens each mounted
    app's engine at start-up and closes them (in reverse) at shutdown; ``lifespan`` is the
    host's own, run inside them."""

    @asynccontextmanager
    async def composed(host: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            if lifespan is not None:
                await stack.enter_async_context(lifespan(host))
            yield

    return composed


def create_app(settings: Settings, *, engine: JobHost | None = None) -> FastAPI:
    """The whole server; the lifespan opens the engine (catalog, watcher, reconciliation),
    creates the first admin when there are no users, and closes it all on shutdown
    (running jobs stopped or left per ``settings.shutdown_policy``)."""
    host = engine if engine is not None else JobHost(settings)
    auth = Authenticator(host)
    adhoc = AdhocRunner(cwd=str(settings.data_dir / "adhoc"))
    metrics = Metrics(host)
    host.hooks.append(metrics.runs)  # before open(): the supervisor takes the hooks then

    running = False

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal running
        await host.open()
        try:
            app.state.one_time_password = await auth.bootstrap_admin()
            # What start-up built (modules, the catalog) lives as long as the process:
            # left out of the collector's full passes, which otherwise walk it all and
            # stall the loop (hundreds of ms on a busy machine) while runs come and go.
            gc.collect()
            gc.freeze()
            running = True
            yield
        finally:
            running = False
            gc.unfreeze()  # collectable again (an embedding process, a test suite)
            await adhoc.aclose()
            await host.aclose()

    app = FastAPI(
        title="JobHost",
        summary="Discover, run, schedule and watch the jobs that live next to your apps.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below with its own, nonce-based policy
        redoc_url=None,
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI for the OpenAPI document. Its assets come from the CDN FastAPI uses,
        and its one inline script runs under a per-response nonce; the UI's strict policy
        is not loosened anywhere else."""
        nonce = secrets.token_urlsafe(16)
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="JobHost API")
        body = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
        cdn = "https://cdn.jsdelivr.net"
        policy = (
            f"default-src 'self'; script-src 'self' {cdn} 'nonce-{nonce}'; "
            f"style-src 'self' {cdn}; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return HTMLResponse(body, headers={"Content-Security-Policy": policy})

    app.state.settings = settings
    app.state.engine = host
    app.state.auth = auth
    app.state.adhoc = adhoc
    app.state.views = ExecutionViews()
    app.state.login_limiter = LoginLimiter(
        settings.login_attempts_per_minute, settings.login_attempts_per_address_per_minute
    )
    app.state.one_time_password = None
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in routers():
        app.include_router(router)
    app.include_router(metrics_router)
    install_contract(app)
    # The UI comes last, so it never shadows an API route.
    if UI_DIR.is_dir():
        app.mount("/", UiFiles(UI_DIR), name="ui")
    # Added last = outermost: headers land even on a 413 answered before the app runs.
    app.add_middleware(LoginCounter, logins=metrics.runs.logins)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(FastReads, api=app)  # the polled reads: inside the headers and 503
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequireLifespan, started=lambda: running)
    return app

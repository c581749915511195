"""The reads clients poll hardest, answered without the framework's per-request work.

Through FastAPI, ``GET /api/v1/jobs/status/{id}``, ``/running`` and ``/history`` each pay
for routing, dependency solving, query validation and ``jsonable_encoder`` over the
answer: more CPU than the read itself. ``FastReads`` answers their common case before the
framework sees it, with the same pieces the routes use: the identity the
``Authenticator`` already proved (its cache, so revocations take effect the same way),
the same engine calls (so the same permission rules), the same JSON (``ExecutionViews``).

Anything else goes on, untouched, to the routes, which answer it as before: a credential
not in the cache (or due for its ``last_used_at`` write), an unusual query value, any
error (so a denial is audited and worded as ever). The routes also go on documenting these
operations in the OpenAPI document.

Identical store reads in flight at once share one call (``SharedReads``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from jobhost.catalog.definition import parse_job_id
from jobhost.engine import JobHost
from jobhost.errors import JobHostError
from jobhost.models import Execution, HistoryQuery, Principal
from jobhost.server import cluster
from jobhost.server.auth import SESSION_COOKIE, Authenticator
from jobhost.server.shared import SharedReads
from jobhost.server.views import ExecutionViews, dumps

PREFIX = "/api/v1/jobs/"
MAX_LIMIT = 500  # as the route's Query(le=500)
SCALARS = frozenset({"job_id", "user", "since", "until", "limit", "cursor"})
_HEADERS = [(b"content-type", b"application/json")]


def executions_body(views: ExecutionViews, executions: list[Execution]) -> bytes:
    """``{"executions": [...]}`` as bytes (``ExecutionList``)."""
    return b'{"executions":[%b]}' % b",".join(views.json(e) for e in executions)


async def history_body(
    engine: JobHost, views: ExecutionViews, query: HistoryQuery, principal: Principal
) -> bytes:
    """A history page as bytes (``HistoryPage``): each finished run's JSON is built once."""
    page = await engine.history(query, principal)
    return b'{"executions":[%b],"next_cursor":%b}' % (
        b",".join(views.json(e) for e in page.items),
        dumps(page.next_cursor),
    )


def history_query(query_string: bytes) -> HistoryQuery | None:
    """The query of a plain ``/history`` request, or None when the route should judge it
    (a repeated or out-of-range value; a malformed one raises ``BadRequest``)."""
    from jobhost.server.routes.jobs import parse_statuses, parse_time

    values: dict[str, str] = {}
    statuses: list[str] = []
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "status":
            statuses.append(value)
        elif name in SCALARS:
            if name in values:
                return None
            values[name] = value
    limit = values.get("limit", "50")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT):
        return None
    user, cursor, job_id = values.get("user"), values.get("cursor"), values.get("job_id")
    if (user is not None and len(user) > 64) or (cursor is not None and len(cursor) > 500):
        return None
    if job_id is not None:
        parse_job_id(job_id)
    return HistoryQuery(
        job_id=job_id,
        user=user,
        statuses=parse_statuses(statuses),
        since=parse_time("since", values.get("since")),
        until=parse_time("until", values.get("until")),
        limit=int(limit),
        cursor=cursor or None,
    )


def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    """The first ``Authorization`` header and the session cookie, as Starlette reads them."""
    authorization: str | None = None
    cookies: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    return authorization, cookies.get(SESSION_COOKIE)


class FastReads:
    """ASGI middleware: answers the common case of the polled reads (see the module doc)."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self.shared = SharedReads()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = None
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):  # mounted under a prefix
                path = path[len(root) :]
            if path.startswith(PREFIX):
                try:
                    body = await self._answer(path[len(PREFIX) :], scope)
                except JobHostError:  # the route answers it, in its words
                    body = None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", b"%d" % len(body)), *_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, route: str, scope: Scope) -> bytes | None:
        if route != "running" and route != "history" and not route.startswith("status/"):
            return None
        state = self.api.state
        auth: Authenticator = state.auth
        identity = auth.cached_identity(*_credentials(scope))
        if identity is None:
            return None
        principal = identity.principal
        engine: JobHost = state.engine
        views: ExecutionViews = state.views
        if route == "running":
            return executions_body(views, await cluster.running(engine, principal))
        if route == "history":
            query = history_query(scope["query_string"])
            if query is None:
                return None
            return await self.shared.read(
                ("history", query, principal),
                lambda: history_body(engine, views, query, principal),
            )
        execution_id = route[len("status/") :]
        if not execution_id or "/" in execution_id:
            return None
        supervisor = engine.supervisor
        if execution_id in supervisor.live or execution_id in supervisor.recent:
            execution = await engine.status(execution_id, principal)  # from memory
        else:
            execution = await self.shared.read(
                ("status", execution_id, principal), lambda: engine.status(execution_id, principal)
            )
        return views.json(execution)

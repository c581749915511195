"""The permission matrix: every route of the app by every kind of caller by an allowed and a
forbidden job → the exact status. A route missing from ``MATRIX`` fails the test, so a new
route cannot ship without deciding who may call it.

Callers: anonymous; ``nobody`` (signed in, no roles); holders of each role of the Guarded
job (view/start/stop/restart); ``admin``; ``alice``, who started the execution in
question but holds no role (the owner may always view and stop her runs).
Jobs: ``Lab/Guarded`` (the roles above apply) and ``Lab/Secret`` (only role ``secret``,
which no caller holds).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jobhost.models import ApiToken, Execution, Principal, User, new_id
from jobhost.security import hash_password, hash_token, new_token
from tests.serverfixtures import (
    USER_PASSWORD,
    Harness,
)

CALLERS = ("anon", "nobody", "viewer", "starter", "stopper", "restarter", "admin", "owner")
ROLES = {
    "nobody": [],
    "viewer": ["ops_view"],
    "starter": ["ops_start"],
    "stopper": ["ops_stop"],
    "restarter": ["ops_restart"],
    "admin": ["admin"],
    "owner": [],
}
USERNAMES = {c: ("alice" if c == "owner" else c) for c in CALLERS}
JOBS = {"allowed": "Lab/Guarded", "forbidden": "Lab/Secret"}
LEGACY = "/apps/WebHostTaskManagement/api/v1/jobs"


def row(*statuses: int) -> dict[str, int]:
    assert len(statuses) == len(CALLERS)
    return dict(zip(CALLERS, statuses, strict=True))


def same(statuses: dict[str, int]) -> dict[str, dict[str, int]]:
    return {"allowed": statuses, "forbidden": statuses}


SIGNED_IN_OK = same(row(401, 200, 200, 200, 200, 200, 200, 200))
ADMIN_ONLY = same(row(401, 403, 403, 403, 403, 403, 200, 403))
NOBODY = same(row(401, 401, 401, 401, 401, 401, 401, 401))
PUBLIC = same(row(200, 200, 200, 200, 200, 200, 200, 200))
VIEW_JOB = {
    "allowed": row(401, 404, 200, 200, 200, 200, 200, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 200, 404),
}
VIEW_RUN = {  # the owner may view her run even without a role
    "allowed": row(401, 404, 200, 200, 200, 200, 200, 200),
    "forbidden": row(401, 404, 404, 404, 404, 404, 200, 200),
}
START = {
    "allowed": row(401, 404, 403, 202, 403, 403, 202, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 202, 404),
}
STOP_RUN = {
    "allowed": row(401, 404, 403, 403, 202, 403, 202, 202),
    "forbidden": row(401, 404, 404, 404, 404, 404, 202, 202),
}
STOP_JOB = {
    "allowed": row(401, 404, 403, 403, 202, 403, 202, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 202, 404),
}
RESTART = {
    "allowed": row(401, 404, 403, 403, 403, 202, 202, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 202, 404),
}
PLAN = {  # a plan shows what a start would pass: the start right, answered 200
    "allowed": row(401, 404, 403, 200, 403, 403, 200, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 200, 404),
}
# Lab/Guarded has no "webhook" in its job.json: whoever passes the start check meets 409.
HOOK_MANAGE = {
    "allowed": row(401, 404, 403, 409, 403, 403, 409, 404),
    "forbidden": row(401, 404, 404, 404, 404, 404, 409, 404),
}
# Built by other engineers (schedules, notifications): only sign-in is asserted here.
ANON_401 = same({"anon": 401})


def legacy(statuses: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The seed's routes answer 200 where the new ones answer 202."""
    return {
        job: {c: 200 if s == 202 else s for c, s in cells.items()}
        for job, cells in statuses.items()
    }


@dataclass
class Cell:
    caller: str
    job: str  # "allowed" | "forbidden"
    expected: int


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    stream: bool = False


class Context:
    """Executions and users the requests refer to; fresh live runs where a cell will act."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.finished: dict[tuple[str, bool], Execution] = {}
        self.live: dict[tuple[str, bool], Execution] = {}
        self.counter = itertools.count()

    async def run(self, job: str, owner: bool) -> Execution:
        user = "alice" if owner else "admin"
        principal = Principal(
            username=user, roles=frozenset({"secret", "ops_view", "ops_start"}), superuser=not owner
        )
        return await self.h.engine.start(JOBS[job], None, principal)

    async def finished_run(self, job: str, owner: bool) -> Execution:
        key = (job, owner)
        if key not in self.finished:
            execution = await self.run(job, owner)
            await self.h.wait_output(execution.id, "ready")
            await self.h.engine.stop(execution_id=execution.id)
            self.finished[key] = await self.h.wait(execution.id)
        return self.finished[key]

    async def live_run(self, cell: Cell) -> Execution:
        owner = cell.caller == "owner"
        if 200 <= cell.expected < 300:  # this cell acts on it: a run of its own
            return await self.run(cell.job, owner)
        key = (cell.job, owner)
        if key not in self.live:
            self.live[key] = await self.run(cell.job, owner)
        return self.live[key]

    async def user(self, prefix: str) -> str:
        name = f"{prefix}{next(self.counter)}"
        await self.h.add_user(name)
        return name


Build = Callable[[Context, Cell], Awaitable[Request]]


def fixed(method: str, path: str, json: Any = None, stream: bool = False) -> Build:
    async def build(ctx: Context, cell: Cell) -> Request:
        return Request(method, path, json, stream)

    return build


def on_job(method: str, template: str, body: Callable[[str], Any] | None = None) -> Build:
    async def build(ctx: Context, cell: Cell) -> Request:
        job_id = JOBS[cell.job]
        app, job = job_id.split("/")
        return Request(method, template.format(app=app, job=job), body(job_id) if body else None)

    return build


def on_run(method: str, template: str, stream: bool = False) -> Build:
    async def build(ctx: Context, cell: Cell) -> Request:
        execution = await ctx.finished_run(cell.job, cell.caller == "owner")
        return Request(method, template.format(id=execution.id), stream=stream)

    return build


def acting_on_run(method: str, path: str, key: str) -> Build:
    async def build(ctx: Context, cell: Cell) -> Request:
        execution = await ctx.live_run(cell)
        return Request(method, path, {key: execution.id})

    return build


def acting_on_job(method: str, path: str, key: str) -> Build:
    async def build(ctx: Context, cell: Cell) -> Request:
        await ctx.live_run(cell)  # something to stop or restart
        return Request(method, path, {key: JOBS[cell.job]})

    return build


async def new_user_body(ctx: Context, cell: Cell) -> Request:
    name = f"made{next(ctx.counter)}"
    return Request("POST", "/api/v1/users", {"username": name, "password": USER_PASSWORD})


async def patch_user(ctx: Context, cell: Cell) -> Request:
    return Request("PATCH", f"/api/v1/users/{await ctx.user('patched')}", {"roles": ["x"]})


async def delete_user(ctx: Context, cell: Cell) -> Request:
    return Request("DELETE", f"/api/v1/users/{await ctx.user('gone')}")


async def revoke_token(ctx: Context, cell: Cell) -> Request:
    token = ApiToken(
        id=new_id(), username="admin", name="victim", token_hash=hash_token(new_token())
    )
    await ctx.h.engine.journal.call(ctx.h.engine.store.save_token, token)
    return Request("DELETE", f"/api/v1/auth/tokens/{token.id}")


def job_body(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id}


MATRIX: dict[str, tuple[Build, dict[str, dict[str, int]]]] = {
    "GET /openapi.json": (fixed("GET", "/openapi.json"), PUBLIC),
    "GET /docs": (fixed("GET", "/docs"), PUBLIC),
    "GET /healthz": (fixed("GET", "/healthz"), PUBLIC),
    "GET /metrics": (fixed("GET", "/metrics"), PUBLIC),
    "POST /api/v1/auth/login": (
        fixed("POST", "/api/v1/auth/login", {"username": "nobody", "password": USER_PASSWORD}),
        PUBLIC,
    ),
    "POST /api/v1/auth/logout": (
        fixed("POST", "/api/v1/auth/logout"),
        same(row(401, 204, 204, 204, 204, 204, 204, 204)),
    ),
    "GET /api/v1/auth/me": (fixed("GET", "/api/v1/auth/me"), SIGNED_IN_OK),
    "POST /api/v1/auth/password": (  # the wrong current password: nothing changes
        fixed(
            "POST",
            "/api/v1/auth/password",
            {"current_password": "not-the-password", "new_password": "another-password-1"},
        ),
        same(row(401, 403, 403, 403, 403, 403, 403, 403)),
    ),
    "GET /api/v1/auth/tokens": (fixed("GET", "/api/v1/auth/tokens"), SIGNED_IN_OK),
    "POST /api/v1/auth/tokens": (
        fixed("POST", "/api/v1/auth/tokens", {"name": "matrix"}),
        same(row(401, 201, 201, 201, 201, 201, 201, 201)),
    ),
    "DELETE /api/v1/auth/tokens/{token_id}": (
        revoke_token,
        same(row(401, 404, 404, 404, 404, 404, 204, 404)),
    ),
    "GET /api/v1/users": (fixed("GET", "/api/v1/users"), ADMIN_ONLY),
    "POST /api/v1/users": (new_user_body, same(row(401, 403, 403, 403, 403, 403, 201, 403))),
    "PATCH /api/v1/users/{username}": (patch_user, ADMIN_ONLY),
    "DELETE /api/v1/users/{username}": (
        delete_user,
        same(row(401, 403, 403, 403, 403, 403, 204, 403)),
    ),
    "GET /api/v1/jobs/catalog": (fixed("GET", "/api/v1/jobs/catalog"), SIGNED_IN_OK),
    "GET /api/v1/jobs/catalog/{app}/{job}": (
        on_job("GET", "/api/v1/jobs/catalog/{app}/{job}"),
        VIEW_JOB,
    ),
    "GET /api/v1/jobs/catalog/{app}/{job}/samples": (
        on_job("GET", "/api/v1/jobs/catalog/{app}/{job}/samples"),
        VIEW_JOB,
    ),
    "GET /api/v1/jobs/catalog/{app}/{job}/plan": (
        on_job("GET", "/api/v1/jobs/catalog/{app}/{job}/plan"),
        PLAN,
    ),
    "GET /api/v1/jobs/catalog/{app}/{job}/hook": (
        on_job("GET", "/api/v1/jobs/catalog/{app}/{job}/hook"),
        HOOK_MANAGE,
    ),
    "POST /api/v1/jobs/catalog/{app}/{job}/hook": (
        on_job("POST", "/api/v1/jobs/catalog/{app}/{job}/hook"),
        HOOK_MANAGE,
    ),
    "POST /api/v1/jobs/catalog/{app}/{job}/hook/rotate": (
        on_job("POST", "/api/v1/jobs/catalog/{app}/{job}/hook/rotate"),
        HOOK_MANAGE,
    ),
    "POST /api/v1/hooks/{token}": (  # the URL is the credential: unknown is 404 for all
        fixed("POST", "/api/v1/hooks/jhh_unknown", {}),
        same(row(404, 404, 404, 404, 404, 404, 404, 404)),
    ),
    "POST /api/v1/jobs/start": (on_job("POST", "/api/v1/jobs/start", job_body), START),
    "POST /api/v1/jobs/test": (on_job("POST", "/api/v1/jobs/test", job_body), START),
    "POST /api/v1/jobs/stop": (
        acting_on_run("POST", "/api/v1/jobs/stop", "execution_id"),
        STOP_RUN,
    ),
    "POST /api/v1/jobs/stop (job_id)": (
        acting_on_job("POST", "/api/v1/jobs/stop", "job_id"),
        STOP_JOB,
    ),
    "POST /api/v1/jobs/restart": (
        acting_on_run("POST", "/api/v1/jobs/restart", "execution_id"),
        RESTART,
    ),
    "POST /api/v1/jobs/restart (job_id)": (
        acting_on_job("POST", "/api/v1/jobs/restart", "job_id"),
        RESTART,
    ),
    "GET /api/v1/jobs/status/{execution_id}": (
        on_run("GET", "/api/v1/jobs/status/{id}"),
        VIEW_RUN,
    ),
    "GET /api/v1/jobs/running": (fixed("GET", "/api/v1/jobs/running"), SIGNED_IN_OK),
    "GET /api/v1/jobs/scheduled": (fixed("GET", "/api/v1/jobs/scheduled"), SIGNED_IN_OK),
    "GET /api/v1/jobs/history": (
        on_job("GET", "/api/v1/jobs/history?job_id={app}/{job}"),
        SIGNED_IN_OK,
    ),
    "POST /api/v1/jobs/reload": (fixed("POST", "/api/v1/jobs/reload"), ADMIN_ONLY),
    "GET /api/v1/jobs/output/{execution_id}": (
        on_run("GET", "/api/v1/jobs/output/{id}"),
        VIEW_RUN,
    ),
    "GET /api/v1/jobs/output/{execution_id}/stream": (
        on_run("GET", "/api/v1/jobs/output/{id}/stream", stream=True),
        VIEW_RUN,
    ),
    "GET /api/v1/jobs/events": (fixed("GET", "/api/v1/jobs/events", stream=True), SIGNED_IN_OK),
    # Internal: only other servers, with a request signed by the cluster key; no user
    # credential, an admin's included, opens them.
    "GET /api/v1/cluster/output/{execution_id}": (
        on_run("GET", "/api/v1/cluster/output/{id}"),
        NOBODY,
    ),
    "GET /api/v1/cluster/output/{execution_id}/stream": (
        on_run("GET", "/api/v1/cluster/output/{id}/stream", stream=True),
        NOBODY,
    ),
    "GET /api/v1/jobs/schedules": (fixed("GET", "/api/v1/jobs/schedules"), ANON_401),
    "POST /api/v1/jobs/schedules/preview": (
        fixed("POST", "/api/v1/jobs/schedules/preview", {"schedule": "@daily"}),
        ANON_401,
    ),
    "GET /api/v1/jobs/schedules/{app}/{job}": (
        on_job("GET", "/api/v1/jobs/schedules/{app}/{job}"),
        ANON_401,
    ),
    "PUT /api/v1/jobs/schedules/{app}/{job}": (
        on_job("PUT", "/api/v1/jobs/schedules/{app}/{job}", lambda _: {"enabled": False}),
        ANON_401,
    ),
    "DELETE /api/v1/jobs/schedules/{app}/{job}": (
        on_job("DELETE", "/api/v1/jobs/schedules/{app}/{job}"),
        ANON_401,
    ),
    "GET /api/v1/jobs/status/{execution_id}/notifications": (
        on_run("GET", "/api/v1/jobs/status/{id}/notifications"),
        ANON_401,
    ),
    "GET /api/v1/audit": (fixed("GET", "/api/v1/audit"), ADMIN_ONLY),
    f"GET {LEGACY}": (fixed("GET", LEGACY), SIGNED_IN_OK),
    f"GET {LEGACY}/catalog": (fixed("GET", f"{LEGACY}/catalog"), SIGNED_IN_OK),
    f"POST {LEGACY}/start": (
        on_job("POST", f"{LEGACY}/start", lambda job_id: {"jobId": job_id}),
        legacy(START),
    ),
    f"POST {LEGACY}/stop": (acting_on_job("POST", f"{LEGACY}/stop", "jobId"), legacy(STOP_JOB)),
    f"GET {LEGACY}/results": (fixed("GET", f"{LEGACY}/results"), SIGNED_IN_OK),
    f"GET {LEGACY}/output": (on_run("GET", LEGACY + "/output?jobId={id}"), VIEW_RUN),
    f"POST {LEGACY}/submit": (
        fixed("POST", f"{LEGACY}/submit", {"jobName": "x", "command": "echo hi"}),
        same(row(401, 403, 403, 403, 403, 403, 403, 403)),
    ),
    "GET /api/v1/instances": (fixed("GET", "/api/v1/instances"), ADMIN_ONLY),
    # Last, and in this order: a drain refuses every start until the resume.
    "POST /api/v1/admin/drain": (
        fixed("POST", "/api/v1/admin/drain", {"wait_seconds": 0}),
        same(row(401, 403, 403, 403, 403, 403, 202, 403)),
    ),
    "POST /api/v1/admin/resume": (fixed("POST", "/api/v1/admin/resume"), ADMIN_ONLY),
}


def app_routes(app: Any) -> set[str]:
    """``METHOD path`` of every route, looking inside included routers."""
    found: set[str] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            elif getattr(route, "methods", None):
                for method in sorted(route.methods - {"HEAD"}):
                    found.add(f"{method} {route.path}")

    walk(app.routes)
    return found


async def stream_status(h: Harness, request: Request, headers: dict[str, str]) -> int:
    """The status of a streaming response, then disconnect (the stream must end)."""
    loop = asyncio.get_running_loop()
    status: asyncio.Future[int] = loop.create_future()
    gone = asyncio.Event()
    sent_body = False
    path, _, query = request.path.partition("?")

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not status.done():
            status.set_result(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    task = asyncio.create_task(h.app(scope, receive, send))
    result = await status
    gone.set()
    await asyncio.wait_for(task, 30)  # the stream ends once the client is gone
    return result


async def test_permission_matrix(harness: Harness) -> None:
    h = harness
    listed = {key.split(" (")[0] for key in MATRIX}
    missing = app_routes(h.app) - listed
    assert not missing, f"routes without a row in MATRIX: {sorted(missing)}"

    password_hash = hash_password(USER_PASSWORD)
    headers: dict[str, dict[str, str]] = {"anon": {}}
    for caller in CALLERS[1:]:
        username = USERNAMES[caller]
        if caller != "admin":
            user = User(
                username=username, password_hash=password_hash, roles=frozenset(ROLES[caller])
            )
            await h.engine.journal.call(h.engine.store.save_user, user)
        clear = new_token()
        token = ApiToken(
            id=new_id(), username=username, name="matrix", token_hash=hash_token(clear)
        )
        await h.engine.journal.call(h.engine.store.save_token, token)
        headers[caller] = {"Authorization": f"Bearer {clear}"}

    ctx = Context(h)
    client = h.client()
    mismatches = []
    for key, (build, expected) in MATRIX.items():
        for job, cells in expected.items():
            for caller, status in cells.items():
                cell = Cell(caller, job, status)
                request = await build(ctx, cell)
                if request.stream:
                    got = await stream_status(h, request, headers[caller])
                    body = ""
                else:
                    response = await client.request(
                        request.method, request.path, json=request.json, headers=headers[caller]
                    )
                    got, body = response.status_code, response.text[:200]
                    client.cookies.clear()  # the login row signs in; callers use tokens
                if got != status:
                    mismatches.append(
                        f"{key} [{job}] as {caller}: expected {status}, got {got} {body}"
                    )
    assert not mismatches, "\n".join(mismatches)

"""A small synchronous client for the JobHost REST API (the CLI's remote half).

Every method maps to one endpoint of the API and returns its answer as the typed model
the OpenAPI document declares (``jobhost.server.schemas``: the same pydantic classes, so
client and server cannot drift apart; fields a newer server adds are kept as extras).
``model.model_dump(mode="json")`` gives back the API's JSON. Errors come back as the
``jobhost.errors`` class of the response's status, carrying the server's message, so a caller prints
``exc.message`` and exits with ``exc.exit_code``. A server that cannot be reached is
``ServerUnreachable`` (exit code 8).

Authentication is a bearer token (``Authorization: Bearer jh_…``), or, after
``login()``, the session cookie plus its CSRF token on writes; the CLI only uses the
session long enough to create a token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from jobhost.errors import (
    BadRequest,
    Conflict,
    InitHookFailed,
    InvalidDefinition,
    InvalidSchedule,
    JobHostError,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TooManyRequests,
    VariableError,
)
from jobhost.server.schemas import (
    AuditPage,
    CatalogOut,
    DeliveryList,
    DeliveryOut,
    ExecutionList,
    ExecutionOut,
    Health,
    HistoryPage,
    HookOut,
    JobDetailOut,
    JobOut,
    Me,
    NewHookOut,
    NewToken,
    OutputOut,
    PlanOut,
    PreviewOut,
    ReloadOut,
    SamplesOut,
    ScheduleList,
    ScheduleOut,
    SignedIn,
    TokenList,
    TokenOut,
    UserList,
    UserOut,
)

M = TypeVar("M", bound=BaseModel)

SESSION_COOKIE = "jobhost_session"
API = "/api/v1"

# One class per status; 422 is shared by several classes told apart by the body's code.
_BY_STATUS: dict[int, type[JobHostError]] = {
    400: BadRequest,
    401: NotAuthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: VariableError,
    429: TooManyRequests,
}
_BY_CODE: dict[str, type[JobHostError]] = {
    cls.code: cls for cls in (InvalidDefinition, VariableError, InvalidSchedule, InitHookFailed)
}


class ServerUnreachable(JobHostError, ConnectionError):
    """No answer from the server: refused, unresolvable, timed out or dropped."""

    code: ClassVar[str] = "unreachable"
    status_code: ClassVar[int] = 503
    exit_code: ClassVar[int] = 8


class ServerError(JobHostError):
    """The server answered with a 5xx (or an answer that is not the API's)."""

    code: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 502
    exit_code: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event: ``event`` name, ``data`` parsed as JSON, ``id`` if given."""

    event: str
    data: Any
    id: str | None = None


def job_path(job_id: str) -> str:
    """``App/Job`` as two quoted path segments (``/`` kept as the separator)."""
    app, sep, job = job_id.partition("/")
    if not sep or not app or not job:
        raise BadRequest(f"A job ID is App/Job, got {job_id!r}")
    return f"{quote(app, safe='')}/{quote(job, safe='')}"


def error_from_response(response: httpx.Response) -> JobHostError:
    """The ``jobhost.errors`` instance for an API error response."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message: str = error["message"]
        code = str(error.get("code") or "")
        details = error.get("details")
    else:
        text = response.text.strip()[:300] or response.reason_phrase
        message = f"JobHost at {response.request.url} answered {status}: {text}"
        code, details = "", None
    cls = _BY_CODE.get(code) if status == 422 else None
    cls = cls or _BY_STATUS.get(status)
    if cls is None:
        if 400 <= status < 500:
            cls = BadRequest
        else:
            return ServerError(message, details=details)
    return cls(message, details=details)


def iter_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Parse a ``text/event-stream`` body (already split into lines) into events.

    Comments (heartbeats) are skipped; multi-line ``data`` is joined with newlines;
    data that is not JSON is yielded as the string it is.
    """
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield StreamEvent(event=event, data=value, id=event_id)
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value_text = line.partition(":")
        value_text = value_text.removeprefix(" ")
        if name == "event":
            event = value_text
        elif name == "data":
            data.append(value_text)
        elif name == "id":
            event_id = value_text


def plain(answer: BaseModel | list[M]) -> Any:
    """A typed answer back as the API's JSON (for printing with ``--json`` and tables)."""
    if isinstance(answer, list):
        return [item.model_dump(mode="json") for item in answer]
    return answer.model_dump(mode="json")


class Client:
    """Synchronous JobHost API client; use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,  # > the server's 15 s heartbeat
        reconnect_attempts: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.stream_timeout = stream_timeout
        self.reconnect_attempts = reconnect_attempts
        self._session: str | None = None
        self._csrf: str | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "jobhost-cli"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- plumbing
    def _headers(self, method: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self._session:
            # The cookie is sent by hand: the standard cookie jar ignores cookies set by
            # hosts such as "localhost", and the CLI never needs more than this one.
            headers["Cookie"] = f"{SESSION_COOKIE}={self._session}"
            if method not in ("GET", "HEAD") and self._csrf:
                headers["X-CSRF-Token"] = self._csrf
        return headers

    def _unreachable(self, exc: httpx.TransportError) -> ServerUnreachable:
        if isinstance(exc, httpx.TimeoutException):
            return ServerUnreachable(
                f"Cannot reach JobHost at {self.base_url}: no answer in time ({exc or 'timeout'})"
            )
        return ServerUnreachable(
            f"Cannot reach JobHost at {self.base_url}: {exc or type(exc).__name__}. "
            "Is the server running (jobhost serve) and the URL right?"
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; a non-2xx answer raises its ``jobhost.errors`` class."""
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                params=_clean(params),
                headers=self._headers(method, headers),
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        # Session handled by hand (see _headers); never let the jar send a stale one.
        self._http.cookies.clear()
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``send`` and return the JSON body (None for 204)."""
        response = self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"JobHost at {self.base_url} answered {path} with something that is not JSON"
            ) from None

    def fetch(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """``call`` and parse the answer into ``model``; a body that does not fit is a
        ``ServerError`` naming the model and the first problem."""
        body = self.call(method, path, **kwargs)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise ServerError(
                f"JobHost at {self.base_url} answered {method} {path} with a body that is "
                f"not a {model.__name__} ({where}: {first['msg']}); is it the same version?"
            ) from None

    # ----------------------------------------------------------------- auth
    def login(self, username: str, password: str) -> SignedIn:
        """Sign in with a session (kept in this client); returns ``{username, roles, …}``."""
        response = self.send(
            "POST", f"{API}/auth/login", body={"username": username, "password": password}
        )
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            if SESSION_COOKIE in cookie:
                self._session = cookie[SESSION_COOKIE].value
        try:
            info = SignedIn.model_validate(response.json())
        except (ValueError, ValidationError):
            raise ServerError(f"JobHost at {self.base_url} answered the sign-in oddly") from None
        self._csrf = info.csrf_token
        return info

    def logout(self) -> None:
        """End the session this client holds (a bearer token stays valid: revoke it)."""
        self.call("POST", f"{API}/auth/logout")
        self._session = self._csrf = None

    def me(self) -> Me:
        return self.fetch(Me, "GET", f"{API}/auth/me")

    def tokens(self, *, all_users: bool = False) -> list[TokenOut]:
        params = {"all": "true"} if all_users else None
        return self.fetch(TokenList, "GET", f"{API}/auth/tokens", params=params).tokens

    def create_token(self, name: str, expires_in_days: int | None = None) -> NewToken:
        """``{id, name, token, expires_at}``; the clear ``token`` is shown only this once."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self.fetch(NewToken, "POST", f"{API}/auth/tokens", body=body)

    def revoke_token(self, token_id: str) -> None:
        self.call("DELETE", f"{API}/auth/tokens/{quote(token_id, safe='')}")

    # ----------------------------------------------------------------- users (admin)
    def users(self) -> list[UserOut]:
        return self.fetch(UserList, "GET", f"{API}/users").users

    def create_user(self, username: str, password: str, roles: Sequence[str]) -> UserOut:
        body = {"username": username, "password": password, "roles": list(roles)}
        return self.fetch(UserOut, "POST", f"{API}/users", body=body)

    def update_user(
        self,
        username: str,
        *,
        password: str | None = None,
        roles: Sequence[str] | None = None,
        disabled: bool | None = None,
    ) -> UserOut:
        body: dict[str, Any] = {}
        if password is not None:
            body["password"] = password
        if roles is not None:
            body["roles"] = list(roles)
        if disabled is not None:
            body["disabled"] = disabled
        path = f"{API}/users/{quote(username, safe='')}"
        return self.fetch(UserOut, "PATCH", path, body=body)

    def delete_user(self, username: str) -> None:
        self.call("DELETE", f"{API}/users/{quote(username, safe='')}")

    # ----------------------------------------------------------------- jobs
    def catalog(self) -> list[JobOut]:
        return self.fetch(CatalogOut, "GET", f"{API}/jobs/catalog").jobs

    def job(self, job_id: str) -> JobDetailOut:
        """The catalog entry plus ``recent`` executions."""
        return self.fetch(JobDetailOut, "GET", f"{API}/jobs/catalog/{job_path(job_id)}")

    def samples(self, job_id: str, limit: int = 100) -> list[Any]:
        path = f"{API}/jobs/catalog/{job_path(job_id)}/samples"
        return self.fetch(SamplesOut, "GET", path, params={"limit": limit}).samples

    def plan(self, job_id: str, variables: Mapping[str, Any] | None = None) -> PlanOut:
        """What a start now would do, without starting it."""
        params = [("var", f"{k}={v}") for k, v in (variables or {}).items()]
        path = f"{API}/jobs/catalog/{job_path(job_id)}/plan"
        return self.fetch(PlanOut, "GET", path, params=params)

    def hook(self, job_id: str) -> HookOut:
        """The job's webhook (whether it exists, its rules; never its URL)."""
        return self.fetch(HookOut, "GET", f"{API}/jobs/catalog/{job_path(job_id)}/hook")

    def create_hook(self, job_id: str, *, rotate: bool = False) -> NewHookOut:
        """A new (or rotated) webhook: the answer holds its URL and secret, once."""
        path = f"{API}/jobs/catalog/{job_path(job_id)}/hook" + ("/rotate" if rotate else "")
        return self.fetch(NewHookOut, "POST", path)

    def start(
        self,
        job_id: str,
        variables: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        at: str | None = None,
        delay_seconds: float | None = None,
        dry_run: bool = False,
    ) -> ExecutionOut:
        """Start now, or at ``at`` (ISO 8601 with offset), or ``delay_seconds`` from now."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body: dict[str, Any] = {"job_id": job_id, "variables": dict(variables or {})}
        if at is not None:
            body["at"] = at
        if delay_seconds is not None:
            body["delay_seconds"] = delay_seconds
        if dry_run:
            body["dry_run"] = True
        return self.fetch(ExecutionOut, "POST", f"{API}/jobs/start", body=body, headers=headers)

    def test(
        self, job_id: str, variables: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ExecutionOut:
        body: dict[str, Any] = {"job_id": job_id, "variables": dict(variables or {})}
        if dry_run:
            body["dry_run"] = True
        return self.fetch(ExecutionOut, "POST", f"{API}/jobs/test", body=body)

    def stop(
        self, *, job_id: str | None = None, execution_id: str | None = None
    ) -> list[ExecutionOut]:
        body = _target(job_id, execution_id)
        return self.fetch(ExecutionList, "POST", f"{API}/jobs/stop", body=body).executions

    def restart(
        self,
        *,
        job_id: str | None = None,
        execution_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> ExecutionOut:
        body: dict[str, Any] = _target(job_id, execution_id)
        if variables is not None:
            body["variables"] = dict(variables)
        return self.fetch(ExecutionOut, "POST", f"{API}/jobs/restart", body=body)

    def status(self, execution_id: str) -> ExecutionOut:
        path = f"{API}/jobs/status/{quote(execution_id, safe='')}"
        return self.fetch(ExecutionOut, "GET", path)

    def notifications(self, execution_id: str) -> list[DeliveryOut]:
        path = f"{API}/jobs/status/{quote(execution_id, safe='')}/notifications"
        return self.fetch(DeliveryList, "GET", path).deliveries

    def output(self, execution_id: str, offset: int = 0, limit: int | None = None) -> OutputOut:
        """Output from byte ``offset``: ``output``, ``next_offset``, ``done``."""
        path = f"{API}/jobs/output/{quote(execution_id, safe='')}"
        return self.fetch(OutputOut, "GET", path, params={"offset": offset, "limit": limit})

    def running(self) -> list[ExecutionOut]:
        return self.fetch(ExecutionList, "GET", f"{API}/jobs/running").executions

    def history(
        self,
        *,
        job_id: str | None = None,
        user: str | None = None,
        statuses: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> HistoryPage:
        """``executions`` newest first, and ``next_cursor`` for the next page."""
        params: list[tuple[str, Any]] = [
            ("job_id", job_id),
            ("user", user),
            ("since", since),
            ("until", until),
            ("limit", limit),
            ("cursor", cursor),
        ]
        params += [("status", status) for status in statuses]
        return self.fetch(HistoryPage, "GET", f"{API}/jobs/history", params=params)

    def reload(self) -> ReloadOut:
        return self.fetch(ReloadOut, "POST", f"{API}/jobs/reload")

    def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AuditPage:
        """``events`` newest first, and ``next_cursor`` (superusers only)."""
        params = {
            "user": user,
            "action": action,
            "target": target,
            "since": since,
            "until": until,
            "limit": limit,
            "cursor": cursor,
        }
        return self.fetch(AuditPage, "GET", f"{API}/audit", params=params)

    def healthz(self) -> Health:
        return self.fetch(Health, "GET", "/healthz")

    # ----------------------------------------------------------------- schedules
    def schedules(self) -> list[ScheduleOut]:
        return self.fetch(ScheduleList, "GET", f"{API}/jobs/schedules").schedules

    def schedule(self, job_id: str) -> ScheduleOut:
        return self.fetch(ScheduleOut, "GET", f"{API}/jobs/schedules/{job_path(job_id)}")

    def set_schedule(self, job_id: str, **fields: Any) -> ScheduleOut:
        """PUT any of ``schedule``, ``enabled``, ``variables``, ``timezone``."""
        path = f"{API}/jobs/schedules/{job_path(job_id)}"
        return self.fetch(ScheduleOut, "PUT", path, body=fields)

    def delete_schedule(self, job_id: str) -> ScheduleOut:
        """Remove the override; returns the schedule now in force (job.json's)."""
        return self.fetch(ScheduleOut, "DELETE", f"{API}/jobs/schedules/{job_path(job_id)}")

    def preview_schedule(self, schedule: str, timezone: str | None = None) -> list[datetime]:
        body: dict[str, Any] = {"schedule": schedule}
        if timezone is not None:
            body["timezone"] = timezone
        return self.fetch(PreviewOut, "POST", f"{API}/jobs/schedules/preview", body=body).next_fires

    # ----------------------------------------------------------------- streams
    def follow(self, execution_id: str, offset: int = 0) -> Iterator[StreamEvent]:
        """Live output: ``output`` events (data ``{output, offset, next_offset}``), then one
        ``end`` event (data: the execution). A dropped connection is resumed from the last
        offset received (``Last-Event-ID``), so nothing is shown twice or lost."""
        path = f"{API}/jobs/output/{quote(execution_id, safe='')}/stream"
        position = offset
        failures = 0
        while True:
            progressed = False
            try:
                for event in self._stream(path, {"Last-Event-ID": str(position)}):
                    if event.event == "output" and isinstance(event.data, dict):
                        position = int(event.data.get("next_offset", position))
                        progressed = True
                    elif event.id is not None and event.id.isdigit():
                        position = int(event.id)
                    yield event
                    if event.event == "end":
                        return
            except ServerUnreachable:
                if failures >= self.reconnect_attempts:
                    raise
            # The stream ended without "end" (or broke): resume where it stopped.
            failures = 0 if progressed else failures + 1
            if failures > self.reconnect_attempts:
                raise ServerUnreachable(
                    f"Lost the output stream of {execution_id!r} from {self.base_url} "
                    f"{failures} times in a row; read the rest with: jobhost output "
                    f"{execution_id} --offset {position}"
                )
            if failures:  # a drop after progress resumes at once; repeated ones back off
                time.sleep(min(0.2 * 2**failures, 5.0))

    def events(self) -> Iterator[StreamEvent]:
        """Execution changes the user may view (``execution`` events), until closed."""
        yield from self._stream(f"{API}/jobs/events", {})

    def _stream(self, path: str, headers: Mapping[str, str]) -> Iterator[StreamEvent]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.stream_timeout)
        all_headers = {"Accept": "text/event-stream", **headers}
        try:
            with self._http.stream(
                "GET", path, headers=self._headers("GET", all_headers), timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield from iter_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None


def _target(job_id: str | None, execution_id: str | None) -> dict[str, Any]:
    if execution_id is not None:
        return {"execution_id": execution_id}
    if job_id is not None:
        return {"job_id": job_id}
    raise BadRequest("Give a job ID or an execution ID")


def _clean(
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> list[tuple[str, Any]] | None:
    """Drop None values (absent filters), keep repeated keys."""
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    return [(key, value) for key, value in items if value is not None]


__all__ = [
    "Client",
    "ServerError",
    "ServerUnreachable",
    "StreamEvent",
    "error_from_response",
    "iter_sse",
    "job_path",
    "plain",
]

"""The OpenAPI document as a contract, and the one HTTP rule it implies (405 with Allow).

FastAPI builds the document from the routes and their ``answers(...)`` models
(``jobhost.server.schemas``); ``openapi_document`` then adds what routes cannot say:

- the error body, declared once (``ErrorBody``) and referenced from every operation for
  400/401/403/404/409/413/422/429/503 (``components/responses``), replacing FastAPI's
  ``{"detail": …}`` 422 that the server never sends;
- ``securitySchemes``: bearer tokens, the session cookie, and the CSRF header a cookie
  needs on writes; each operation says which it takes (none for the public ones);
- the event types of the ``text/event-stream`` routes (``x-events``, with a schema each).

``MethodNotAllowed`` answers a request for a path the API has but not with that method
with 405 and ``Allow`` (without it the UI's static mount would answer 404 or a bare 405).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobhost.server.auth import CSRF_HEADER, SESSION_COOKIE, current_identity
from jobhost.server.schemas import ErrorBody, ExecutionList, ExecutionOut, OutputEvent

ERRORS = {
    400: ("BadRequest", "Malformed input (JSON, a query value, a path part)"),
    401: ("NotAuthenticated", "No valid session or token"),
    403: ("Forbidden", "Signed in, but not allowed (role, superuser, CSRF header)"),
    404: ("NotFound", "No such thing, or not visible to the caller"),
    409: ("Conflict", "The state does not allow it (e.g. max_concurrent reached)"),
    413: ("PayloadTooLarge", "The request body is over max_request_bytes"),
    422: ("Unprocessable", "Invalid request fields, variables, schedule or definition"),
    429: ("TooManyRequests", "Rate limit or full queue; see Retry-After"),
    503: ("Unavailable", "The server is draining or overloaded; see Retry-After"),
}
PUBLIC_ERRORS = (400, 413, 422, 429, 503)
RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
SECURITY_SCHEMES = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (jh_…) from POST /api/v1/auth/tokens",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The browser session from POST /api/v1/auth/login",
    },
    "csrfHeader": {
        "type": "apiKey",
        "in": "header",
        "name": CSRF_HEADER,
        "description": "The session's csrf_token; required with the cookie on every write",
    },
}
UNSAFE = frozenset({"post", "put", "patch", "delete"})
# Routes that answer without a credential from some callers (/metrics: metrics_allow).
OPTIONAL_AUTH = frozenset({"/metrics"})
SSE_EVENTS: dict[str, dict[str, type[BaseModel]]] = {
    "/api/v1/jobs/output/{execution_id}/stream": {"output": OutputEvent, "end": ExecutionOut},
    "/api/v1/jobs/events": {"snapshot": ExecutionList, "execution": ExecutionOut},
}


class EventStream(StreamingResponse):
    """A ``text/event-stream`` answer (documents SSE routes with the right media type)."""

    media_type = "text/event-stream"


# Routes whose credential is the URL itself (a webhook's token): no session or bearer
# token, but every error a signed-in call can meet (a wrong signature is a 401).
URL_CREDENTIAL = frozenset({"/api/v1/hooks/{token}"})


def _needs_identity(dependant: Dependant) -> bool:
    return any(d.call is current_identity or _needs_identity(d) for d in dependant.dependencies)


@dataclass(frozen=True)
class Operation:
    """One documented route, with the path as mounted (router prefixes included)."""

    path: str
    methods: frozenset[str]
    dependant: Dependant


def api_operations(app: FastAPI) -> list[Operation]:
    """The app's API routes (newer FastAPI keeps included routers as lazy contexts)."""
    found: list[Operation] = []
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        pairs: Iterator[tuple[Any, str]] = ((r, getattr(r, "path_format", "")) for r in app.routes)
    else:
        pairs = ((c.original_route, c.path_format) for c in contexts(app.routes))
    for route, path in pairs:
        if isinstance(route, APIRoute) and route.include_in_schema:
            found.append(Operation(path, frozenset(route.methods or ()), route.dependant))
    return found


def _security(operation: Operation, method: str) -> list[dict[str, list[str]]]:
    if not _needs_identity(operation.dependant) and operation.path not in OPTIONAL_AUTH:
        return []
    cookie: dict[str, list[str]] = {"sessionCookie": []}
    if method in UNSAFE:
        cookie["csrfHeader"] = []
    schemes: list[dict[str, list[str]]] = [{"bearerToken": []}, cookie]
    return [{}, *schemes] if operation.path in OPTIONAL_AUTH else schemes


def _error_responses() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for status, (name, description) in ERRORS.items():
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        if status in (429, 503):
            response["headers"] = {"Retry-After": RETRY_AFTER}
        found[name] = response
    found["MethodNotAllowed"] = {
        "description": "The path exists, not with this method; Allow lists the methods",
        "headers": {"Allow": {"schema": {"type": "string"}, "description": "e.g. GET, POST"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    return found


def _schema_of(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The document served at /openapi.json (built once per app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _schema_of(ErrorBody, schemas)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["responses"] = _error_responses()
    components["securitySchemes"] = SECURITY_SCHEMES
    for op, method in ((o, m.lower()) for o in api_operations(app) for m in sorted(o.methods)):
        operation = document["paths"][op.path][method]
        responses = operation.setdefault("responses", {})
        security = _security(op, method)
        operation["security"] = security
        codes = ERRORS if security else {s: ERRORS[s] for s in PUBLIC_ERRORS}
        if op.path == "/api/v1/auth/login":
            codes = {**codes, 401: ERRORS[401]}
        if op.path in URL_CREDENTIAL:
            codes = ERRORS
        for status, (name, _) in codes.items():
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
        operation["responses"] = responses = dict(sorted(responses.items()))
        events = SSE_EVENTS.get(op.path)
        if events:
            stream = responses["200"]["content"].setdefault("text/event-stream", {})
            stream["schema"] = {"type": "string", "description": "SSE frames"}
            responses["200"].setdefault("content", {}).pop("application/json", None)
            responses["200"]["x-events"] = {
                name: _schema_of(model, schemas) for name, model in events.items()
            }
            names = ", ".join(f"`{name}`" for name in events)
            responses["200"]["description"] = (
                f"Server-sent events ({names}; data is JSON, see x-events); "
                "`: heartbeat` comments every 15 s"
            )
    app.openapi_schema = document
    return document


class MethodNotAllowed:
    """ASGI middleware: a 404 or 405 for a path that an API route has with other methods
    becomes a 405 in the error shape, with ``Allow``. Only such answers pay for the check."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._paths: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def _allowed(self, path: str) -> list[str]:
        if self._paths is None:  # the routes are all there by the first answer
            self._paths = [(compile_path(o.path)[0], o.methods) for o in api_operations(self.api)]
        methods: set[str] = set()
        for pattern, allowed in self._paths:
            if pattern.match(path):
                methods |= allowed
        return sorted(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def checked(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                allowed = self._allowed(scope["path"])
                if allowed and scope["method"] not in allowed:
                    replaced = True
                    await self._answer(scope, allowed, send)
                    return
            if not replaced:
                await send(message)

        await self.app(scope, receive, checked)

    async def _answer(self, scope: Scope, allowed: list[str], send: Send) -> None:
        message = (
            f"Method {scope['method']} is not allowed on {scope['path']}: use {', '.join(allowed)}"
        )
        error = {"code": "method_not_allowed", "message": message, "details": {"allow": allowed}}
        body = json.dumps({"error": error}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"allow", ", ".join(allowed).encode()),
        ]
        await send({"type": "http.response.start", "status": 405, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install_contract(app: FastAPI) -> None:
    """Serve the contract document and answer 405 with Allow (call after the routes)."""

    def document() -> dict[str, Any]:
        return openapi_document(app)

    app.openapi = document  # type: ignore[method-assign]
    app.add_middleware(MethodNotAllowed, api=app)

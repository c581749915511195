"""Every error leaves the server in one shape: ``{"error": {"code", "message", "details"}}``.

The status comes from the ``JobHostError`` class (``jobhost.errors``); this module only
translates the framework's own errors (validation, unknown routes) into that shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobhost.errors import JobHostError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "variables", "x")`` → ``body.variables.x``; ``("query", "limit")`` → ``limit``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("query", "path", "header", "cookie"):
        return f"{parts[0]} parameter {'.'.join(parts[1:])!r}"
    if parts and parts[0] == "body":
        return "body field " + repr(".".join(parts[1:])) if len(parts) > 1 else "the body"
    return ".".join(parts) or "the request"


def _problem(error: dict[str, Any]) -> str:
    loc = error.get("loc", ())
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown {_where(loc)}: remove it (no such field)"
    if kind == "missing":
        return f"{_where(loc)} is required"
    return f"{_where(loc)}: {error.get('msg', 'invalid')}"


async def _jobhost_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobHostError)
    # Any error that knows when to come back says so (429 rate limits, 503 draining).
    retry_after = getattr(exc, "retry_after", None) or getattr(exc, "retry_after_seconds", None)
    if retry_after is None and exc.status_code == 429:
        retry_after = 1
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        error = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (error.get("ctx") or {}).get("error", "malformed JSON")
        return error_response(400, "bad_request", f"The request body is not valid JSON: {reason}")
    problems = [_problem(e) for e in errors]
    # Never echo "input": it may be a password.
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type"), "msg": e.get("msg")}
        for e in errors
    ]
    message = "Invalid request: " + "; ".join(problems)
    return error_response(422, "invalid_request", message, details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"No such endpoint: {request.method} {request.url.path}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, _HTTP_CODES.get(status, "error"), message, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "Internal server error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(JobHostError, _jobhost_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

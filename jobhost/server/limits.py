"""Request limits: the body size cap (413 before a huge body is read) and the login limiter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobhost.errors import PayloadTooLarge, TooManyRequests
from jobhost.server.errors import error_response


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes``.

    A declared ``Content-Length`` over the limit is answered at once, without reading a
    byte; a chunked body is counted as it arrives and cut off when it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (
            f"The request body is larger than the limit of {self.max_bytes} bytes "
            "(settings.max_request_bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    response = error_response(400, "bad_request", "Invalid Content-Length header")
                    await response(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    response = error_response(413, PayloadTooLarge.code, self._message())
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException, because FastAPI turns any other error raised
                    # while reading the body into a generic 400.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)


class LoginLimiter:
    """At most ``per_minute`` failed sign-ins per (username, address) in any 60 seconds.

    In memory, per process: a restart forgets the count, which only gives an attacker
    one more minute's worth of guesses against a memory-hard hash.
    """

    WINDOW = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        now = self._clock()
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and now - failures[0] >= self.WINDOW:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def check(self, username: str, address: str) -> None:
        """Raise TooManyRequests when this pair has used up its attempts."""
        key = (username.casefold(), address)
        if len(self._recent(key)) >= self.per_minute:
            raise TooManyRequests(
                f"Too many failed sign-ins for {username!r} from {address}; "
                "wait a minute and try again"
            )

    def failed(self, username: str, address: str) -> None:
        key = (username.casefold(), address)
        self._recent(key)
        self._failures.setdefault(key, deque()).append(self._clock())
        if len(self._failures) > 100_000:  # bounded memory under a spray of usernames
            self._failures.clear()

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username.casefold(), address), None)

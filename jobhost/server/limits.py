"""Request limits: the body size cap (413 before a huge body is read) and the login limiter."""

from __future__ import annotations

import contextlib
import math
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
    """Sign-in attempts in any 60 seconds: at most ``per_user`` for one username (from any
    address) and ``per_address`` from one address (for any usernames).

    An attempt counts the moment it is admitted, before its password is checked, so
    requests sent in parallel cannot all slip through; a successful sign-in gives its
    attempt back (and clears the user's count). In memory, per process: a restart
    forgets the counts, which only gives an attacker one more minute's worth of guesses
    against a memory-hard hash.
    """

    WINDOW = 60.0
    MAX_KEYS = 100_000  # bounded memory under a spray of usernames

    def __init__(
        self, per_user: int, per_address: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self._clock = clock
        self._users: dict[str, deque[float]] = {}
        self._addresses: dict[str, deque[float]] = {}

    def _recent(self, table: dict[str, deque[float]], key: str, now: float) -> deque[float]:
        attempts = table.get(key)
        if attempts is None:
            attempts = table[key] = deque()
            if len(table) > self.MAX_KEYS:
                table.clear()
                table[key] = attempts
        while attempts and now - attempts[0] >= self.WINDOW:
            attempts.popleft()
        return attempts

    def _wait(self, attempts: deque[float], now: float) -> int:
        return max(1, math.ceil(self.WINDOW - (now - attempts[0])))

    def admit(self, username: str, address: str) -> float:
        """Count an attempt now, or raise TooManyRequests (with the seconds to wait)."""
        now = self._clock()
        user = self._recent(self._users, username.casefold(), now)
        peer = self._recent(self._addresses, address, now)
        if len(user) >= self.per_user:
            wait = self._wait(user, now)
            raise TooManyRequests(
                f"Too many sign-in attempts for {username!r} in the last minute; "
                f"try again in {wait} seconds",
                retry_after=wait,
            )
        if len(peer) >= self.per_address:
            wait = self._wait(peer, now)
            raise TooManyRequests(
                f"Too many sign-in attempts from {address} in the last minute; "
                f"try again in {wait} seconds",
                retry_after=wait,
            )
        user.append(now)
        peer.append(now)
        return now

    def succeeded(self, username: str, address: str, admitted: float) -> None:
        """The attempt admitted at ``admitted`` signed in: it no longer counts."""
        self._users.pop(username.casefold(), None)
        peer = self._addresses.get(address)
        if peer is not None:
            with contextlib.suppress(ValueError):
                peer.remove(admitted)

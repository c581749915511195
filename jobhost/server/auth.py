"""Who is asking: session cookies, bearer tokens, CSRF, and the first admin.

Browsers hold a session cookie (``jobhost_session``: HttpOnly, SameSite=Strict) and
send ``X-CSRF-Token`` on every write; scripts and the CLI send ``Authorization: Bearer
jh_…`` and need no CSRF header, because a browser never attaches one by itself. Session
IDs and tokens are stored only as hashes; a stolen database yields neither.

Proving an identity costs two store reads (the token or session, then its user). The
``IdentityCache`` keeps a proven identity for a few seconds, keyed by the credential's
hash, so a client polling status does not pay them on every request. Sign-out, token
revocation and every change of a user made through this server drop the affected
entries at once. Caveat: with several server processes over one database (PostgreSQL at
scale), a change made through another process reaches this one within
``IDENTITY_TTL_SECONDS``; expiry times are checked on every request either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request

from jobhost.engine import JobHost
from jobhost.errors import NotAuthenticated, PermissionDenied
from jobhost.models import ApiToken, Principal, Session, User
from jobhost.security import (
    BEARER_PREFIX,
    PasswordWork,
    hash_token,
    needs_rehash,
    new_csrf_token,
    new_session_id,
)
from jobhost.server.shared import SharedReads
from jobhost.server.sse import paced

SESSION_COOKIE = "jobhost_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOUCH_EVERY_SECONDS = 60.0  # last_used_at is informative; one write a minute is plenty
IDENTITY_TTL_SECONDS = 5.0  # how stale a revocation made by another process may be
IDENTITY_CACHE_SIZE = 10_000
BAD_LOGIN = "Invalid username or password"
SESSION_GONE = "Your session is not valid (signed out or expired); sign in again"
# Cache keys: the credential's hash, prefixed by its kind.
_KEY_BEARER = "bearer:"
_KEY_COOKIE = "cookie:"
# An open stream asks the store again this often whether its credential still holds
# (a revocation made through this process ends it at once; this catches the others).
STREAM_RECHECK_SECONDS = 5.0
ANONYMOUS_DENIALS_PER_MINUTE = 20  # audited in full; the rest are counted in the next row


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated request: the principal, and the session or token that proved it."""

    principal: Principal
    user: User
    session: Session | None = None
    token: ApiToken | None = None


class IdentityCache:
    """Proven identities by credential hash, each for ``ttl`` seconds (see the module doc).

    Only successes are kept: an unknown or revoked credential always asks the store.
    Bounded: when full, the oldest entry goes. Every ``forget…`` bumps ``generation``;
    ``put`` drops an identity read under an older one, so a read that raced a revocation
    cannot bring the revoked credential back.
    """

    def __init__(
        self,
        ttl: float = IDENTITY_TTL_SECONDS,
        size: int = IDENTITY_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: dict[str, tuple[float, Identity]] = {}
        self.generation = 0
        # Open streams: key, identity, and the event that ends them.
        self._watchers: dict[int, tuple[str, Identity, asyncio.Event]] = {}
        self._watcher_ids = itertools.count()

    def watch(self, key: str, identity: Identity) -> tuple[int, asyncio.Event]:
        """An event set when ``identity``'s credential or user is revoked through this cache."""
        watcher = next(self._watcher_ids)
        event = asyncio.Event()
        self._watchers[watcher] = (key, identity, event)
        return watcher, event

    def unwatch(self, watcher: int) -> None:
        self._watchers.pop(watcher, None)

    def _end_streams(self, doomed: Callable[[str, Identity], bool]) -> None:
        for key, identity, event in self._watchers.values():
            if doomed(key, identity):
                event.set()

    def get(self, key: str) -> Identity | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, identity: Identity, generation: int) -> None:
        """Keep ``identity``, proven by store reads begun at ``generation``."""
        if generation != self.generation:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # dicts keep insertion order
        self._entries[key] = (self._clock() + self.ttl, identity)

    def forget(self, key: str) -> None:
        self.generation += 1
        self._entries.pop(key, None)
        self._end_streams(lambda watched, _: watched == key)

    def forget_where(self, doomed: Callable[[Identity], bool]) -> None:
        self.generation += 1
        for key in [k for k, (_, i) in self._entries.items() if doomed(i)]:
            del self._entries[key]
        self._end_streams(lambda _, identity: doomed(identity))

    def forget_user(self, username: str) -> None:
        """After the user changed (roles, password, disabled) or was deleted."""
        self.forget_where(lambda identity: identity.user.username == username)

    def forget_token(self, token_id: str) -> None:
        """After the token was revoked."""
        self.forget_where(lambda i: i.token is not None and i.token.id == token_id)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._end_streams(lambda _, __: True)


@functools.lru_cache(maxsize=16)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, proxies: tuple[str, ...]) -> bool:
    if not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in _networks(proxies))


def _proxies(request: Request) -> tuple[str, ...]:
    settings = getattr(request.app.state, "settings", None)
    return tuple(settings.trusted_proxies) if settings is not None else ()


def client_address(request: Request) -> str:
    """Who is asking: the peer, or, when the peer is a trusted proxy, the nearest address
    in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    proxies = _proxies(request)
    if not _trusted(peer, proxies):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:64]
    return hops[0][:64] if hops else peer


def request_scheme(request: Request) -> str:
    """``https`` or ``http`` as the client used it (``X-Forwarded-Proto`` from a trusted proxy)."""
    peer = request.client.host if request.client else ""
    if _trusted(peer, _proxies(request)):
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            return proto
    return request.url.scheme


def secure_cookies(request: Request) -> bool:
    """Whether the session cookie gets ``Secure``: an https request, or an https public_url."""
    settings = getattr(request.app.state, "settings", None)
    public = (settings.public_url or "") if settings is not None else ""
    return request_scheme(request) == "https" or public.lower().startswith("https://")


class DenialBudget:
    """Anonymous denials audited: ``per_minute`` rows a minute; the rest are counted and
    reported in the next row written (``details.suppressed``). Bounded by construction."""

    WINDOW = 60.0

    def __init__(
        self,
        per_minute: int = ANONYMOUS_DENIALS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._written = 0
        self.suppressed = 0

    def take(self) -> int | None:
        """How many were suppressed before this one, when it may be written; else None."""
        now = self._clock()
        if now - self._window_start >= self.WINDOW:
            self._window_start, self._written = now, 0
        if self._written >= self.per_minute:
            self.suppressed += 1
            return None
        self._written += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class Authenticator:
    """Sessions and tokens over the store; one per app."""

    def __init__(self, engine: JobHost) -> None:
        self.engine = engine
        self.identities = IdentityCache()
        self.passwords = PasswordWork(engine.settings.max_pending_logins)
        self.denials = DenialBudget()
        self._touched: dict[str, float] = {}
        # Streams opened together recheck together: one store check per credential.
        self._rechecks = SharedReads()

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await self.engine.journal.call(fn, *args)

    def principal_for(self, user: User) -> Principal:
        return Principal(
            username=user.username,
            roles=frozenset(user.roles),
            superuser=self.engine.settings.is_superuser(user.roles),
        )

    # ------------------------------------------------------------- bootstrap
    async def bootstrap_admin(self) -> str | None:
        """With no users at all, create ``admin``; returns the one-time password if generated.

        The generated password goes to stderr only, never to a log file.
        """
        store = self.engine.store
        if await self._call(store.count_users) > 0:
            return None
        given = self.engine.settings.admin_password
        password = given or secrets.token_urlsafe(12)
        admin = User(
            username="admin",
            password_hash=await self.passwords.hash(password),
            roles=frozenset({"admin"}),
            created_at=self.engine.clock(),
        )
        await self._call(store.save_user, admin)
        await self.engine.audit("user.create", None, "admin", details={"bootstrap": True})
        if given:
            return None
        sys.stderr.write(
            "JobHost created the user 'admin' with this one-time password "
            f"(shown only now; change it after signing in): {password}\n"
        )
        sys.stderr.flush()
        return password

    # ------------------------------------------------------------- sessions
    async def login(self, username: str, password: str) -> tuple[str, Session, User]:
        """(cookie value, session, user); NotAuthenticated with one message for every failure."""
        store = self.engine.store
        user: User | None = await self._call(store.get_user, username)
        # Checked off the loop, also for an unknown user (both answers equally slow).
        matches = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not matches or user.disabled:
            raise NotAuthenticated(BAD_LOGIN)
        if needs_rehash(user.password_hash):
            user = User(
                username=user.username,
                password_hash=await self.passwords.hash(password),
                roles=user.roles,
                disabled=user.disabled,
                created_at=user.created_at,
            )
            await self._call(store.save_user, user)
        session_id = new_session_id()
        now = self.engine.clock()
        session = Session(
            id_hash=hash_token(session_id),
            username=user.username,
            csrf_token=new_csrf_token(),
            expires_at=now + timedelta(hours=self.engine.settings.session_hours),
            created_at=now,
        )
        await self._call(store.save_session, session)
        return session_id, session, user

    async def change_password(self, identity: Identity, current: str, new: str) -> None:
        """The signed-in user's own password: ``current`` must match. Their other sessions
        end; this one and their API tokens stay."""
        store = self.engine.store
        user: User | None = await self._call(store.get_user, identity.user.username)
        if user is None or not await self.passwords.verify(user.password_hash, current):
            raise PermissionDenied("The current password is wrong; nothing was changed")
        changed = User(
            username=user.username,
            password_hash=await self.passwords.hash(new),
            roles=user.roles,
            disabled=user.disabled,
            created_at=user.created_at,
        )
        await self._call(store.save_user, changed)
        await self._call(store.delete_user_sessions, user.username)
        if identity.session is not None:
            await self._call(store.save_session, identity.session)
        keep = _KEY_COOKIE + identity.session.id_hash if identity.session else None
        self.identities.forget_where(
            lambda i: (
                i.user.username == user.username
                and i.token is None
                and (i.session is None or _KEY_COOKIE + i.session.id_hash != keep)
            )
        )

    async def still_valid(self, identity: Identity) -> bool:
        """Whether the credential behind ``identity`` holds now (asks the store)."""
        store = self.engine.store
        now = self.engine.clock()
        if identity.token is not None:
            token: ApiToken | None = await self._call(
                store.get_token_by_hash, identity.token.token_hash
            )
            if token is None or token.revoked:
                return False
            if token.expires_at is not None and token.expires_at <= now:
                return False
        elif identity.session is not None:
            session: Session | None = await self._call(store.get_session, identity.session.id_hash)
            if session is None or session.expires_at <= now:
                return False
        return await self._active_user(identity.user.username) is not None

    async def until_revoked(
        self, identity: Identity, events: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """``events`` until the identity's credential is revoked, expires, or its user is
        disabled or deleted: at once for a change made through this process, within
        ``STREAM_RECHECK_SECONDS`` for one made through another."""
        if identity.token is not None:
            key = _KEY_BEARER + identity.token.token_hash
        elif identity.session is not None:
            key = _KEY_COOKIE + identity.session.id_hash
        else:
            key = ""
        watcher, revoked = self.identities.watch(key, identity)
        ended: asyncio.Future[Any] = asyncio.ensure_future(revoked.wait())
        try:
            async with contextlib.aclosing(
                paced(events, STREAM_RECHECK_SECONDS, stop=ended)
            ) as items:
                async for item in items:
                    if item is not None:
                        yield item
                    elif not await self._rechecks.read(
                        (key, identity.user.username), functools.partial(self.still_valid, identity)
                    ):
                        return
        finally:
            self.identities.unwatch(watcher)
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ended

    async def logout(self, identity: Identity) -> None:
        if identity.session is not None:
            self.identities.forget(_KEY_COOKIE + identity.session.id_hash)
            await self._call(self.engine.store.delete_session, identity.session.id_hash)

    # ------------------------------------------------------------- per request
    async def _active_user(self, username: str) -> User | None:
        user: User | None = await self._call(self.engine.store.get_user, username)
        if user is None or user.disabled:
            return None
        return user

    async def _from_token(self, token: str) -> Identity:
        invalid = NotAuthenticated(
            "Invalid, expired or revoked API token; create a new one with POST /api/v1/auth/tokens"
        )
        if not token.startswith(BEARER_PREFIX):
            raise invalid
        token_hash = hash_token(token)
        key = _KEY_BEARER + token_hash
        now = self.engine.clock()
        identity = self.identities.get(key)
        if identity is None:
            generation = self.identities.generation
            stored: ApiToken | None = await self._call(
                self.engine.store.get_token_by_hash, token_hash
            )
            if stored is None or stored.revoked:
                raise invalid
            user = await self._active_user(stored.username)
            if user is None:
                raise invalid
            identity = Identity(principal=self.principal_for(user), user=user, token=stored)
            self.identities.put(key, identity, generation)
        stored = identity.token
        if stored is None or (stored.expires_at is not None and stored.expires_at <= now):
            self.identities.forget(key)
            raise invalid
        last = self._touched.get(stored.id)
        if last is None or time.monotonic() - last >= TOUCH_EVERY_SECONDS:
            self._touched[stored.id] = time.monotonic()
            if len(self._touched) > 100_000:
                self._touched.clear()
            await self._call(self.engine.store.touch_token, stored.id, now)
        return identity

    async def _from_cookie(self, value: str) -> Identity:
        store = self.engine.store
        session_hash = hash_token(value)
        key = _KEY_COOKIE + session_hash
        cached = self.identities.get(key)
        if cached is not None and cached.session is not None:
            if cached.session.expires_at > self.engine.clock():
                return cached
            self.identities.forget(key)  # expired: the store path below deletes it
        generation = self.identities.generation
        session: Session | None = await self._call(store.get_session, session_hash)
        if session is None:
            raise NotAuthenticated(SESSION_GONE)
        if session.expires_at <= self.engine.clock():
            await self._call(store.delete_session, session.id_hash)
            raise NotAuthenticated("Your session has expired; sign in again")
        user = await self._active_user(session.username)
        if user is None:
            raise NotAuthenticated(SESSION_GONE)
        identity = Identity(principal=self.principal_for(user), user=user, session=session)
        self.identities.put(key, identity, generation)
        return identity

    def cached_identity(self, authorization: str | None, session: str | None) -> Identity | None:
        """The identity ``identify`` would return, when it is in the cache and needs no
        store call (no ``last_used_at`` write due); else None. No side effects, no audit."""
        now = self.engine.clock()
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token.startswith(BEARER_PREFIX):
                return None
            identity = self.identities.get(_KEY_BEARER + hash_token(token))
            stored = identity.token if identity is not None else None
            if stored is None or (stored.expires_at is not None and stored.expires_at <= now):
                return None
            last = self._touched.get(stored.id)
            if last is None or time.monotonic() - last >= TOUCH_EVERY_SECONDS:
                return None
            return identity
        if session:
            identity = self.identities.get(_KEY_COOKIE + hash_token(session))
            if identity is None or identity.session is None or identity.session.expires_at <= now:
                return None
            return identity
        return None

    async def identify(self, request: Request) -> Identity:
        """The request's identity; a bearer token wins over a cookie. NotAuthenticated if none."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthenticated(
                    "Unsupported Authorization header: send 'Authorization: Bearer jh_…'"
                )
            return await self._from_token(token.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return await self._from_cookie(cookie)
        raise NotAuthenticated(
            "Sign in first: send a session cookie (POST /api/v1/auth/login) "
            "or 'Authorization: Bearer <token>'"
        )


def engine_of(request: Request) -> JobHost:
    engine: JobHost = request.app.state.engine
    return engine


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def deny(request: Request, user: str | None, reason: str) -> None:
    """Audit a 401/403 decided at the HTTP layer (the engine audits its own denials).

    A signed-in user's denials are all audited; anonymous ones within a budget
    (``DenialBudget``), so unauthenticated traffic cannot grow the audit without bound."""
    details: dict[str, Any] = {"method": request.method, "reason": reason[:200]}
    if user is None:
        suppressed = authenticator_of(request).denials.take()
        if suppressed is None:
            return
        if suppressed:
            details["suppressed"] = suppressed
    await engine_of(request).audit(
        "http.denied",
        user,
        request.url.path[:300],
        outcome="denied",
        address=client_address(request),
        details=details,
    )


async def current_identity(request: Request) -> Identity:
    """The signed-in identity; 401 when there is none, 403 for a cookie write without CSRF."""
    cached = getattr(request.state, "identity", None)
    if isinstance(cached, Identity):
        return cached
    try:
        identity = await authenticator_of(request).identify(request)
    except NotAuthenticated as exc:
        await deny(request, None, exc.message)
        raise
    if identity.session is not None and request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(sent.encode(), identity.session.csrf_token.encode()):
            await deny(request, identity.principal.username, "CSRF token missing or invalid")
            raise PermissionDenied("CSRF token missing or invalid")
    request.state.identity = identity
    return identity


async def current_principal(
    identity: Annotated[Identity, Depends(current_identity)],
) -> Principal:
    return identity.principal


async def superuser_identity(
    request: Request, identity: Annotated[Identity, Depends(current_identity)]
) -> Identity:
    """The identity, if it is a superuser's; 403 otherwise."""
    if not identity.principal.superuser:
        reason = f"{identity.principal.username!r} is not a superuser; this needs an admin role"
        await deny(request, identity.principal.username, reason)
        raise PermissionDenied(reason)
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
SuperIdentity = Annotated[Identity, Depends(superuser_identity)]

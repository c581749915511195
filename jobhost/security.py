"""The permission rule, and hashing of passwords, tokens and session IDs.

The rule for action A on job J: allowed when the principal is a superuser, or J's
``roles_A`` is empty, or the principal holds one of J's ``roles_A``. Absent lists
mean "any signed-in user", except ``roles_schedule``: absent means superusers only,
because changing when a job runs is an operator's decision. A job whose job.json is
invalid has no roles to consult, so only superusers may act on it. Role names
compare case-insensitively, as in the seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from jobhost.catalog.definition import JobDefinition
from jobhost.errors import PermissionDenied, TooManyRequests
from jobhost.models import Action, Execution, Principal

BEARER_PREFIX = "jh_"  # makes a leaked token recognisable (secret scanners, logs)

# argon2id with the library's defaults (memory-hard; ~50 ms on a small machine).
# A hasher is an immutable parameter set, not state, so one instance is shared.
_HASHER = PasswordHasher()


class HasDefinition(Protocol):
    """A catalog job: an ID and its definition (None when its job.json is invalid)."""

    @property
    def id(self) -> str: ...

    @property
    def definition(self) -> JobDefinition | None: ...


def _definition(target: JobDefinition | HasDefinition | None) -> JobDefinition | None:
    if target is None or isinstance(target, JobDefinition):
        return target
    return target.definition


def can(
    principal: Principal, definition_or_job: JobDefinition | HasDefinition | None, action: Action
) -> bool:
    """Whether ``principal`` may do ``action`` on the job (see the module docstring)."""
    if principal.superuser:
        return True
    definition = _definition(definition_or_job)
    if definition is None:
        return False
    roles = definition.roles_for(action)
    if roles is None:
        return action != Action.SCHEDULE
    if not roles:
        return True
    held = {role.casefold() for role in principal.roles}
    return any(role.casefold() in held for role in roles)


def can_on_execution(
    principal: Principal,
    job: JobDefinition | HasDefinition | None,
    execution: Execution,
    action: Action,
) -> bool:
    """Like ``can``, but whoever started an execution may always view and stop it."""
    owner = execution.user is not None and execution.user == principal.username
    if owner and action in (Action.VIEW, Action.STOP):
        return True
    return can(principal, job, action)


def require(principal: Principal, job: HasDefinition, action: Action) -> None:
    """Raise PermissionDenied, naming the roles that would allow it, unless ``can``."""
    if can(principal, job, action):
        return
    prefix = f"{principal.username!r} may not {action} {job.id!r}"
    definition = job.definition
    if definition is None:
        reason = "the job's definition is invalid, so only superusers may act on it"
    else:
        roles = definition.roles_for(action)
        if roles is None:
            reason = f"roles_{action} is not set, so only superusers may {action} it"
        else:
            reason = f"requires one of the roles {', '.join(roles)}"
    raise PermissionDenied(f"{prefix}: {reason}")


def hash_password(password: str) -> str:
    """An argon2id hash (with its salt and parameters) of ``password``."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a mismatch or a malformed hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's (rehash on login)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


T = TypeVar("T")
# argon2 releases the GIL while it hashes: two threads use two cores and leave the
# event loop free. One pool per process, since the cores are shared by every app in it.
HASH_WORKERS = 2
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_dummy_hash: str | None = None


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="jobhost-argon2")
        return _pool


def _verify_unknown(password: str) -> bool:
    """Verify against a throwaway hash, so an unknown user costs as much as a known one.
    The hash is made on first use (in the pool), never at import."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)
    return False


class PasswordWork:
    """Password hashing and checking off the event loop: ``HASH_WORKERS`` threads, and at
    most ``max_pending`` calls admitted (running or waiting). Beyond that a call fails at
    once with TooManyRequests, so a flood of sign-ins never queues without bound."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests(
                f"{self.max_pending} sign-ins are being checked right now "
                "(settings.max_pending_logins); try again in a second",
                retry_after=1,
            )
        try:
            future: Future[T] = _hash_pool().submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        # Released when the thread is done, even if the request was cancelled meanwhile.
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """``verify_password``; with no hash (unknown user) as slow as a real check."""
        if password_hash is None:
            return await self._run(_verify_unknown, password)
        return await self._run(verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)


def new_token() -> str:
    """A new API token in clear (shown once): ``jh_`` + 256 random bits."""
    return BEARER_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex of a token or session ID.

    A fast hash is right here, unlike for passwords: these values carry 256 random
    bits, so there is nothing to brute-force, and every request looks one up.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    """A new browser session ID (the cookie value; the store keeps ``hash_token`` of it)."""
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    """A new CSRF token, bound to a session."""
    return secrets.token_urlsafe(32)

"""Job webhooks: a secret URL, ``POST /api/v1/hooks/{token}``, that starts one job.

- A job opts in with ``"webhook": {"enabled": true}`` in its job.json. Holders of the
  job's start right create the hook and rotate it; the URL's token is shown once and
  stored as its SHA-256 only (``jobhost.store.hooks``).
- With ``"signature": "hmac-sha256"`` a call must also carry
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` (GitHub's form),
  keyed with the hook's signing secret, shown once with the URL. That secret is not
  stored: it is derived from the server's signing key (``<data dir>/webhook.key``,
  0600, made on first use; servers sharing a store need the same file) and the hook's
  salt, which a rotation changes. So a copy of the database can neither call nor sign.
- The body's JSON fields named in ``template_variables`` become the run's variables,
  checked as any start's (422 when they do not pass); other fields are ignored, so a
  sender's whole event payload can be posted as is.
- The run is started as the hook's creator, with the creator's roles as they are at
  the call (a creator who lost the start right, or was disabled, makes the hook
  refuse); the trigger is ``webhook``. Every call is audited (``job.start`` with the
  trigger, or ``hook.call`` when refused); creation and rotation are audited too.
- Each hook is limited to its ``rate_per_minute`` calls (a sliding minute), beyond
  which it answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobhost.catalog.discovery import Job
from jobhost.errors import (
    BadRequest,
    Conflict,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    TooManyRequests,
)
from jobhost.models import Action, Execution, Principal, Trigger, iso
from jobhost.security import can, hash_token
from jobhost.store import hooks as db

if TYPE_CHECKING:
    from jobhost.engine import JobHost
    from jobhost.store.sql import SqlStore

HOOK_PREFIX = "jhh_"
SIGNATURE_HEADER = "X-Hub-Signature-256"
KEY_FILE = "webhook.key"
WINDOW_SECONDS = 60.0


_TOKEN_IN_PATH = re.compile(r"(/api/v1/hooks/)[^/?\s]+")


class HookTokenFilter(logging.Filter):
    """Masks webhook tokens in access-log lines (the URL is the hook's credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def hook_path(token: str) -> str:
    return f"/api/v1/hooks/{token}"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signing_key(data_dir: Path) -> bytes:
    """The server's signing key, made on first use (0600, never overwritten). Written to
    a private temporary file, then linked into place: a server that reads it never sees
    it half written, and of two servers making it at once, one key wins for both."""
    path = data_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another server made it first: use theirs
    finally:
        tmp.unlink()
    return path.read_bytes()


class RateLimit:
    """At most ``limit`` calls in any ``WINDOW_SECONDS`` per hook (in memory, per server)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._calls: dict[str, deque[float]] = {}
        self._clock = clock

    def take(self, key: str, limit: int) -> float | None:
        """None when the call may go; else the seconds until it may."""
        now = self._clock()
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - WINDOW_SECONDS:
            calls.popleft()
        if len(calls) >= limit:
            return calls[0] + WINDOW_SECONDS - now
        calls.append(now)
        return None


class Webhooks:
    """Creating, rotating, showing and calling job webhooks."""

    def __init__(self, engine: JobHost) -> None:
        from jobhost.schedules import sql_store

        self.engine = engine
        self._store: SqlStore = sql_store(engine)
        self._limits = RateLimit()
        self._key: bytes | None = None

    def _secret(self, hook: db.Hook) -> str:
        if self._key is None:
            self._key = _signing_key(self.engine.settings.data_dir)
        digest = hmac.new(self._key, f"{hook.job_id}\0{hook.salt}".encode(), hashlib.sha256)
        return "jhs_" + digest.hexdigest()

    async def _managed(self, job_id: str, principal: Principal, address: str | None) -> Job:
        """The job, if the principal holds its start right (403 audited) and it opts in."""
        job = self.engine.job(job_id, principal)
        if not can(principal, job, Action.START):
            await self.engine.audit(
                "hook.manage", principal, job.id, outcome="denied", address=address
            )
            roles = job.definition.roles_for(Action.START) if job.definition else None
            need = f"one of the roles {', '.join(roles)}" if roles else "a superuser role"
            raise PermissionDenied(
                f"{principal.username!r} may not manage the webhook of {job.id!r}: "
                f"it starts the job, so it requires the start right ({need})"
            )
        webhook = job.definition.webhook if job.definition else None
        if webhook is None or not webhook.enabled:
            raise Conflict(
                f'Job {job.id!r} has no webhook: add "webhook": {{"enabled": true}} to its '
                "job.json first"
            )
        return job

    async def create(
        self, job_id: str, principal: Principal, *, rotate: bool, address: str | None = None
    ) -> dict[str, Any]:
        """A new token (and signing secret) for the job's hook, shown this once.
        ``rotate`` replaces an existing hook (the old URL stops working at once);
        without it, a job that has a hook is a 409."""
        job = await self._managed(job_id, principal, address)
        existing = await self.engine.journal.call(db.get_hook, self._store, job.id)
        if existing is not None and not rotate:
            raise Conflict(
                f"Job {job.id!r} already has a webhook (created by {existing.created_by}); "
                f"rotate it to get a new URL: jobhost hook rotate {job.id}"
            )
        if existing is None and rotate:
            raise NotFound(f"Job {job.id!r} has no webhook to rotate; create one first")
        token = HOOK_PREFIX + secrets.token_urlsafe(32)
        hook = db.Hook(
            job_id=job.id,
            token_hash=hash_token(token),
            salt=secrets.token_hex(16),
            created_by=principal.username,
            created_at=self.engine.clock(),
        )
        await self.engine.journal.call(db.save_hook, self._store, hook)
        await self.engine.audit(
            "hook.rotate" if rotate else "hook.create", principal, job.id, address=address
        )
        webhook = job.definition.webhook if job.definition else None
        signed = webhook is not None and webhook.signature is not None
        return {
            **self._describe(job, hook),
            "token": token,
            "url_path": hook_path(token),
            "signing_secret": self._secret(hook) if signed else None,
        }

    async def show(
        self, job_id: str, principal: Principal, *, address: str | None = None
    ) -> dict[str, Any]:
        """Whether the job has a hook, who made it and when, and its rules (no token)."""
        job = await self._managed(job_id, principal, address)
        hook = await self.engine.journal.call(db.get_hook, self._store, job.id)
        return self._describe(job, hook)

    def _describe(self, job: Job, hook: db.Hook | None) -> dict[str, Any]:
        webhook = job.definition.webhook if job.definition else None
        return {
            "job_id": job.id,
            "exists": hook is not None,
            "created_by": hook.created_by if hook else None,
            "created_at": iso(hook.created_at) if hook else None,
            "signature": webhook.signature if webhook else None,
            "rate_per_minute": webhook.rate_per_minute if webhook else None,
        }

    async def call(
        self, token: str, body: bytes, signature: str | None, *, address: str | None = None
    ) -> Execution:
        """Start the hook's job from a call to its URL (see the module docstring)."""
        unknown = NotFound("No webhook at this URL (a rotated hook's old URL stops working)")
        if not token.startswith(HOOK_PREFIX) or len(token) > 100:
            raise unknown
        hook = await self.engine.journal.call(db.find_hook, self._store, hash_token(token))
        job = self.engine.catalog.get(hook.job_id) if hook else None
        webhook = job.definition.webhook if job and job.definition else None
        if hook is None or job is None or webhook is None or not webhook.enabled:
            raise unknown
        wait = self._limits.take(hook.job_id, webhook.rate_per_minute)
        if wait is not None:
            raise TooManyRequests(
                f"The webhook of {job.id!r} allows {webhook.rate_per_minute} calls a minute "
                '("rate_per_minute" in its job.json); try again later',
                retry_after=math.ceil(wait),
            )
        if webhook.signature is not None:
            expected = sign(self._secret(hook), body)
            if signature is None or not hmac.compare_digest(signature.strip(), expected):
                await self.engine.audit(
                    "hook.call",
                    f"webhook:{hook.created_by}",
                    job.id,
                    outcome="denied",
                    address=address,
                    details={"reason": "missing or wrong signature"},
                )
                problem = "is missing" if signature is None else "does not match the body"
                raise NotAuthenticated(
                    f"The {SIGNATURE_HEADER} header {problem}: sign the raw body with the "
                    "hook's signing secret (HMAC-SHA256, as sha256=<hex>)"
                )
        variables = _variables(job, body)
        principal = await self._creator(hook, job, address)
        return await self.engine.start(
            job.id, variables, principal, trigger=Trigger.WEBHOOK, address=address
        )

    async def _creator(self, hook: db.Hook, job: Job, address: str | None) -> Principal:
        user = await self.engine.journal.call(self.engine.store.get_user, hook.created_by)
        if user is None or user.disabled:
            await self.engine.audit(
                "hook.call",
                f"webhook:{hook.created_by}",
                job.id,
                outcome="denied",
                address=address,
                details={"reason": "creator gone or disabled"},
            )
            raise PermissionDenied(
                f"The webhook of {job.id!r} was created by {hook.created_by!r}, who no longer "
                "exists or is disabled; someone with the start right must rotate it"
            )
        roles = frozenset(user.roles)
        return Principal(
            username=user.username,
            roles=roles,
            superuser=self.engine.settings.is_superuser(roles),
        )


def _variables(job: Job, body: bytes) -> dict[str, Any]:
    """The body's fields named in ``template_variables`` (an empty body: none)."""
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("The webhook body must be a JSON object (or empty)") from None
    if not isinstance(payload, dict):
        raise BadRequest(
            f"The webhook body must be a JSON object (or empty), got {type(payload).__name__}"
        )
    declared = job.definition.template_variables if job.definition else {}
    return {name: payload[name] for name in declared if name in payload}

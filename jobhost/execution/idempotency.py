"""Start-once semantics for ``Idempotency-Key``: a retried request never runs a job twice.

A key is bound to the request that first used it: (user, job, test flag, variables).
The same key with a different request is refused (422), as Stripe's API does, instead of
answering with an unrelated execution. Secret variables take no part in the comparison
(their values are never stored, not even as a digest).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from jobhost.errors import IdempotencyKeyReused
from jobhost.models import Execution

Lookup = Callable[[str | None, str], Awaitable[Execution | None]]


def fingerprint(
    job_id: str,
    test: bool,
    variables: Mapping[str, Any],
    secret: Collection[str] = (),
    *,
    dry_run: bool = False,
) -> str:
    """A digest of what a start asks for (secret values masked); a dry run differs from
    the same start for real (digests of real starts are as before dry runs existed)."""
    shown = {name: "<secret>" if name in secret else value for name, value in variables.items()}
    parts: list[Any] = [job_id, test, shown, *(["dry-run"] if dry_run else [])]
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def _refuse(key: str, job_id: str, first: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"Idempotency-Key {key!r} was first used for another request (execution {first}); "
        f"this one ({job_id!r}) differs in its job or variables. Use a new key for a new "
        "request, or repeat the first request unchanged",
        details={"execution": first},
    )


class IdempotencyKeys:
    """Concurrent requests with one (user, key) share the first one's execution; keys of
    earlier process lifetimes are answered by the store (``lookup``)."""

    def __init__(self, lookup: Lookup, *, remembered: int = 10_000) -> None:
        self._lookup = lookup
        self._remembered = remembered
        self._futures: dict[tuple[str | None, str], tuple[str, asyncio.Future[Execution]]] = {}

    async def once(
        self,
        user: str | None,
        key: str,
        create: Callable[[], Awaitable[Execution]],
        *,
        job_id: str = "",
        request: str | None = None,
    ) -> Execution:
        """The execution for (user, key): the first request's, or ``create()``'s. ``request``
        is the ``fingerprint`` of this request; a different one for a used key is a 422."""
        pending = self._futures.get((user, key))
        if pending is not None:
            first, future = pending
            if request is not None and first != request:
                shared = await asyncio.shield(future)
                raise _refuse(key, job_id, shared.id)
            return await asyncio.shield(future)
        # Registered before the first await, so concurrent retries wait for this one.
        future = asyncio.get_running_loop().create_future()
        self._futures[(user, key)] = (request or "", future)
        try:
            execution = await self._lookup(user, key)
            if execution is not None and request is not None:
                known = execution.request_fingerprint
                if (known is not None and known != request) or (
                    known is None and job_id and execution.job_id != job_id
                ):
                    raise _refuse(key, job_id, execution.id)
            if execution is None:
                execution = await create()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: the caller gets it from the raise
            del self._futures[(user, key)]
            raise
        future.set_result(execution)
        if len(self._futures) > self._remembered:  # the store answers for older keys
            self._futures.clear()
        return execution

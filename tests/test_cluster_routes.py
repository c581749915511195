"""The internal routes other servers read output through: only a fresh request signed
with the store's cluster key passes; no user credential does."""

from __future__ import annotations

import time

from jobhost.server.cluster import HEADER, signature
from jobhost.store import requests
from tests.serverfixtures import Harness


async def signed(h: Harness, target: str, *, key: bytes | None = None, age: int = 0) -> int:
    if key is None:
        key = await h.engine.journal.call(requests.cluster_key, h.engine.store)
    when = int(time.time()) - age
    value = f"v1 peer {when} {signature(key, 'GET', target, when, 'peer')}"
    async with h.client(headers={HEADER: value}) as client:
        return (await client.get(target)).status_code


async def test_only_signed_fresh_requests_read_output(harness: Harness) -> None:
    h = harness
    execution = await h.start_as("Lab/Hello", "alice")
    await h.wait(execution.id)
    target = f"/api/v1/cluster/output/{execution.id}?offset=0&limit=100"
    assert await signed(h, target) == 200
    assert await signed(h, target, key=b"x" * 32) == 401  # not the store's key
    assert await signed(h, target, age=3600) == 401  # replayed an hour later
    assert await signed(h, f"/api/v1/cluster/output/{execution.id}?offset=5") == 200
    admin = await h.admin()
    refused = await admin.get(target)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"


async def test_a_signature_covers_the_query(harness: Harness) -> None:
    h = harness
    execution = await h.start_as("Lab/Hello", "alice")
    await h.wait(execution.id)
    key = await h.engine.journal.call(requests.cluster_key, h.engine.store)
    when = int(time.time())
    good = f"/api/v1/cluster/output/{execution.id}?offset=0"
    value = f"v1 peer {when} {signature(key, 'GET', good, when, 'peer')}"
    async with h.client(headers={HEADER: value}) as client:
        assert (await client.get(good)).status_code == 200
        other = await client.get(f"/api/v1/cluster/output/{execution.id}?offset=7")
    assert other.status_code == 401

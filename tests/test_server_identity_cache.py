"""The identity cache (auth.py) and memoised execution views (views.py): faster, and
never at the price of a revoked token, a disabled user or a stale role being honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobhost.models import Execution, ExecutionStatus, Principal, Trigger, User
from jobhost.server.auth import Identity, IdentityCache
from jobhost.server.views import ExecutionViews
from tests.serverfixtures import Harness

REVOKED = "Invalid, expired or revoked API token"


CREATED = datetime(2024, 5, 1, tzinfo=UTC)


def identity(username: str) -> Identity:
    user = User(username=username, password_hash="x", roles=frozenset({"ops"}), created_at=CREATED)
    return Identity(principal=Principal(username=username, roles=user.roles), user=user)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = IdentityCache(ttl=5.0, clock=clock)
    cache.put("k", identity("ann"), cache.generation)
    clock.now += 4.9
    assert cache.get("k") == identity("ann")
    clock.now += 0.1
    assert cache.get("k") is None


def test_a_read_that_raced_a_revocation_is_not_cached() -> None:
    cache = IdentityCache()
    began = cache.generation  # a request starts reading the store…
    cache.forget_user("ann")  # …the user is disabled meanwhile…
    cache.put("k", identity("ann"), began)  # …and its stale answer arrives
    assert cache.get("k") is None


def test_forget_user_drops_only_that_users_entries_and_size_is_bounded() -> None:
    cache = IdentityCache(size=2)
    cache.put("a", identity("ann"), cache.generation)
    cache.put("b", identity("bob"), cache.generation)
    cache.forget_user("ann")
    assert cache.get("a") is None
    assert cache.get("b") == identity("bob")
    cache.put("c", identity("cid"), cache.generation)
    cache.put("d", identity("dan"), cache.generation)
    assert cache.get("b") is None  # the oldest went
    assert cache.get("d") == identity("dan")


async def test_disabling_a_user_stops_their_cached_token_at_once(harness: Harness) -> None:
    await harness.add_user("dora", ["ops"])
    dora = await harness.token_client("dora")
    admin = await harness.admin()
    assert (await dora.get("/api/v1/auth/me")).status_code == 200  # now cached
    assert (await admin.patch("/api/v1/users/dora", json={"disabled": True})).status_code == 200
    refused = await dora.get("/api/v1/auth/me")
    assert refused.status_code == 401
    assert REVOKED in refused.json()["error"]["message"]


async def test_role_changes_reach_a_cached_token_at_once(harness: Harness) -> None:
    await harness.add_user("eve", ["ops"])
    eve = await harness.token_client("eve")
    admin = await harness.admin()
    assert (await eve.get("/api/v1/auth/me")).json()["roles"] == ["ops"]
    await admin.patch("/api/v1/users/eve", json={"roles": ["qa"]})
    assert (await eve.get("/api/v1/auth/me")).json()["roles"] == ["qa"]
    assert (await admin.delete("/api/v1/users/eve")).status_code == 204
    gone = await eve.get("/api/v1/auth/me")
    assert gone.status_code == 401
    assert REVOKED in gone.json()["error"]["message"]


async def test_revoking_a_cached_token_takes_effect_at_once(harness: Harness) -> None:
    await harness.add_user("fay", ["ops"])
    session = await harness.login("fay")
    made = (await session.post("/api/v1/auth/tokens", json={"name": "ci"})).json()
    fay = harness.client(headers={"Authorization": f"Bearer {made['token']}"})
    assert (await fay.get("/api/v1/jobs/running")).status_code == 200  # now cached
    assert (await fay.delete(f"/api/v1/auth/tokens/{made['id']}")).status_code == 204
    refused = await fay.get("/api/v1/jobs/running")
    assert refused.status_code == 401
    assert REVOKED in refused.json()["error"]["message"]


def test_views_match_to_api_and_follow_each_new_state() -> None:
    started = datetime.now(UTC) - timedelta(seconds=30)
    running = Execution(
        id="e1",
        job_id="Lab/Slow",
        status=ExecutionStatus.RUNNING,
        trigger=Trigger.USER,
        user="ann",
        started_at=started,
    )
    views = ExecutionViews()
    first = views.api(running)
    assert first["status"] == "running"
    assert first["duration_seconds"] >= 30.0
    first["status"] = "changed by a caller"
    again = views.api(running)
    assert again["status"] == "running"  # callers get copies
    assert again["duration_seconds"] >= first["duration_seconds"]  # live runs keep counting
    ended = running.evolve(status=ExecutionStatus.SUCCEEDED, ended_at=started + timedelta(1))
    assert views.api(ended) == ended.to_api()
    assert b'"status":"succeeded"' in views.event(ended)
    assert views.event(ended) is views.event(ended)

"""The polled reads (status, running, history) answered before routing
(``jobhost.server.fastreads``): the same answers, the same permission rules, and a
revocation still takes effect at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from jobhost.models import Execution, ExecutionStatus, Trigger, utcnow
from jobhost.server.shared import SharedReads
from jobhost.server.views import ExecutionViews
from tests.serverfixtures import Harness, harness_fixture  # noqa: F401

HISTORY = "/api/v1/jobs/history"


async def test_a_revoked_token_stops_polled_reads_at_once(harness: Harness) -> None:
    await harness.add_user("pia", ["ops_view"])
    session = await harness.login("pia")
    created = await session.post("/api/v1/auth/tokens", json={"name": "poll"})
    token = created.json()
    pia = harness.client(headers={"Authorization": f"Bearer {token['token']}"})
    for _ in range(3):  # the first proves the token; the others find it cached
        assert (await pia.get(HISTORY)).status_code == 200
    revoked = await session.delete(f"/api/v1/auth/tokens/{token['id']}")
    assert revoked.status_code == 204
    for path in (HISTORY, "/api/v1/jobs/running", "/api/v1/jobs/status/nope"):
        assert (await pia.get(path)).status_code == 401, path


async def test_a_signed_out_session_stops_polled_reads_at_once(harness: Harness) -> None:
    admin = await harness.admin()
    assert (await admin.get(HISTORY)).status_code == 200
    assert (await admin.get(HISTORY)).status_code == 200
    assert (await admin.post("/api/v1/auth/logout")).status_code == 204
    assert (await admin.get(HISTORY)).status_code == 401


async def test_polled_history_and_status_follow_role_changes(harness: Harness) -> None:
    guarded = await harness.start_as("Lab/Guarded", "olga", frozenset({"ops_start"}))
    await harness.add_user("vic", ["ops_view"])
    vic = await harness.token_client("vic")
    admin = await harness.admin()
    status = f"/api/v1/jobs/status/{guarded.id}"
    for _ in range(2):
        assert (await vic.get(status)).json()["id"] == guarded.id
        ids = [e["id"] for e in (await vic.get(HISTORY)).json()["executions"]]
        assert guarded.id in ids
        running = (await vic.get("/api/v1/jobs/running")).json()["executions"]
        assert guarded.id in [e["id"] for e in running]
    await admin.patch("/api/v1/users/vic", json={"roles": []})
    assert (await vic.get(status)).status_code == 404
    assert (await vic.get(HISTORY)).json()["executions"] == []
    assert (await vic.get("/api/v1/jobs/running")).json()["executions"] == []
    await admin.post("/api/v1/jobs/stop", json={"execution_id": guarded.id})


async def test_unusual_history_queries_are_judged_as_before(harness: Harness) -> None:
    admin = await harness.admin()
    assert (await admin.get(HISTORY)).status_code == 200  # the identity is cached now
    for query, code in (
        ("limit=0", 422),
        ("limit=501", 422),
        ("limit=ten", 422),
        ("status=bogus", 400),
        ("since=yesterday", 400),
        ("job_id=../x", 400),
        ("limit=2&limit=3", 200),
    ):
        answer = await admin.get(f"{HISTORY}?{query}")
        assert answer.status_code == code, (query, answer.text)
        if code != 200:
            assert "error" in answer.json()


async def test_concurrent_identical_polls_see_a_run_committed_before_they_asked(
    harness: Harness,
) -> None:
    admin = await harness.admin()
    before = await asyncio.gather(*(admin.get(HISTORY) for _ in range(5)))
    assert all(answer.status_code == 200 for answer in before)
    execution = await harness.start_as("Lab/Hello", "admin")
    await harness.wait(execution.id)
    after = await asyncio.gather(*(admin.get(HISTORY) for _ in range(5)))
    for answer in after:
        assert answer.json()["executions"][0]["id"] == execution.id


async def test_shared_reads_never_join_a_call_already_under_way() -> None:
    shared = SharedReads()
    calls: list[asyncio.Event] = []

    async def call() -> int:
        gate = asyncio.Event()
        calls.append(gate)
        await gate.wait()
        return len(calls)

    first = asyncio.ensure_future(shared.read("k", call))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(shared.read("k", call))
    third = asyncio.ensure_future(shared.read("k", call))
    await asyncio.sleep(0)
    assert len(calls) == 1  # the later two wait for the next call, together
    calls[0].set()
    assert await first == 1
    await asyncio.sleep(0)
    assert len(calls) == 2
    second.cancel()  # one caller going away does not end the others' read
    calls[1].set()
    assert await third == 2
    with pytest.raises(asyncio.CancelledError):
        await second


async def test_shared_reads_pass_an_error_to_every_caller() -> None:
    shared = SharedReads()
    gate = asyncio.Event()

    async def failing() -> int:
        await gate.wait()
        raise LookupError("gone")

    async def blocking() -> int:
        await gate.wait()
        return 0

    running = asyncio.ensure_future(shared.read("k", blocking))
    await asyncio.sleep(0)
    waiters = [asyncio.ensure_future(shared.read("k", failing)) for _ in range(2)]
    gate.set()
    assert await running == 0
    for waiter in waiters:
        with pytest.raises(LookupError):
            await waiter


def test_a_running_executions_json_is_its_api_view_with_the_duration_now() -> None:
    started = datetime.now(UTC) - timedelta(seconds=30)
    running = Execution(
        id="r1",
        job_id="Lab/Slow",
        status=ExecutionStatus.RUNNING,
        trigger=Trigger.USER,
        user="ann",
        variables={"duration_seconds": None, "note": '"duration_seconds":1'},
        created_at=started,
        started_at=started,
    )
    views = ExecutionViews()
    for _ in range(2):  # built, then from its kept parts
        answer = json.loads(views.json(running))
        expected = running.to_api()
        assert answer.pop("duration_seconds") >= 30
        expected.pop("duration_seconds")
        assert answer == expected
    ended = dataclasses.replace(running, status=ExecutionStatus.SUCCEEDED, ended_at=utcnow())
    assert json.loads(views.json(ended)) == ended.to_api()

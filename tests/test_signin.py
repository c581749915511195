"""Sign-in resists guessing and flooding; revocations reach open streams; password
changes and resets; proxies are believed only when trusted."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from jobhost import security
from jobhost.models import AuditQuery
from tests.serverfixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Harness,
    make_settings,
    running_harness,
)
from tests.test_server_sse import live, sign_in

__all__ = ["live"]  # the fixture, used below


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


def _retry_matches(response: httpx.Response) -> None:
    seconds = re.search(r"try again in (\d+) seconds", response.json()["error"]["message"])
    assert seconds is not None, response.text
    assert response.headers["Retry-After"] == seconds.group(1)


async def test_parallel_wrong_passwords_are_counted_at_admission(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_attempts_per_minute=10)
    async for harness in running_harness(settings):
        await harness.add_user("carol")
        client = harness.client()
        answers = await asyncio.gather(*(_login(client, "carol", f"guess-{i}") for i in range(30)))
        codes = sorted(a.status_code for a in answers)
        assert codes.count(401) == 10, codes
        assert codes.count(429) == 20, codes
        limited = next(a for a in answers if a.status_code == 429)
        assert "Too many sign-in attempts for 'carol'" in limited.json()["error"]["message"]
        _retry_matches(limited)
        # Even the right password waits now: the limit is per user, from any address.
        assert (await _login(client, "carol", USER_PASSWORD)).status_code == 429


async def test_one_address_spraying_usernames_is_limited(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_attempts_per_address_per_minute=5)
    async for harness in running_harness(settings):
        client = harness.client()
        answers = [await _login(client, f"nobody{i}", "x") for i in range(8)]
        assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
        assert "Too many sign-in attempts from 127.0.0.1" in answers[-1].json()["error"]["message"]
        _retry_matches(answers[-1])


async def test_a_successful_sign_in_gives_its_attempt_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_attempts_per_address_per_minute=3)
    async for harness in running_harness(settings):
        await harness.add_user("dan")
        client = harness.client()
        for _ in range(5):
            assert (await _login(client, "dan", USER_PASSWORD)).status_code == 200


async def test_excess_pending_sign_ins_are_answered_at_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_pending_logins=1, login_attempts_per_minute=100)
    async for harness in running_harness(settings):
        client = harness.client()
        answers = await asyncio.gather(*(_login(client, f"u{i}", "wrong") for i in range(8)))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {401, 429}
        busy = [a for a in answers if a.status_code == 429]
        assert busy, codes
        assert "sign-ins are being checked right now" in busy[0].json()["error"]["message"]
        assert busy[0].headers["Retry-After"] == "1"


async def test_password_checks_run_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # argon2 takes ~0.1 s a check: on the loop, every sign-in would stall every request,
    # schedule and dispatch of the server for that long. The real check runs; the test only
    # notes which thread ran it.
    threads: list[int] = []
    real = security.verify_password

    def noting(password_hash: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return real(password_hash, password)

    monkeypatch.setattr(security, "verify_password", noting)
    async for harness in running_harness(make_settings(tmp_path)):
        await harness.add_user("gina")
        client = harness.client()
        assert (await _login(client, "gina", "wrong")).status_code == 401
        assert (await _login(client, "nobody-here", "wrong")).status_code == 401
        assert (await _login(client, "gina", USER_PASSWORD)).status_code == 200
    assert len(threads) == 3
    assert threading.get_ident() not in threads


async def test_anonymous_denials_are_bounded_and_signed_in_ones_kept(harness: Harness) -> None:
    anonymous = harness.client()
    for _ in range(60):
        assert (await anonymous.get("/api/v1/jobs/running")).status_code == 401
    await harness.add_user("eve")
    eve = await harness.login("eve")
    for _ in range(25):
        assert (await eve.get("/api/v1/users")).status_code == 403
    await harness.engine.journal.flush()
    page = await harness.engine.audit_log(AuditQuery(action="http.denied", limit=500))
    anonymous_rows = [e for e in page.items if e.user is None]
    assert len(anonymous_rows) == 20
    assert len([e for e in page.items if e.user == "eve"]) == 25


async def test_revoking_a_token_ends_its_event_stream(live: tuple[Harness, str]) -> None:
    harness, base = live
    await harness.add_user("bob")
    async with sign_in(base, "bob", USER_PASSWORD) as bob:
        created = (await bob.post("/api/v1/auth/tokens", json={"name": "feed"})).json()
        headers = {"Authorization": f"Bearer {created['token']}"}
        async with (
            httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as feed,
            feed.stream("GET", "/api/v1/jobs/events") as response,
        ):
            lines = response.aiter_lines()
            assert await anext(lines) == ": connected"
            revoked = await bob.delete(f"/api/v1/auth/tokens/{created['id']}")
            assert revoked.status_code == 204
            rest = await asyncio.wait_for(_drain(lines), 30)
            assert "event: execution" not in rest


async def test_disabling_a_user_ends_their_output_stream(live: tuple[Harness, str]) -> None:
    harness, base = live
    await harness.add_user("bob")
    async with (
        sign_in(base, "bob", USER_PASSWORD) as bob,
        sign_in(base, "admin", ADMIN_PASSWORD) as admin,
    ):
        run = (await bob.post("/api/v1/jobs/start", json={"job_id": "Lab/Slow"})).json()
        async with bob.stream("GET", f"/api/v1/jobs/output/{run['id']}/stream") as response:
            lines = response.aiter_lines()
            assert "ready" in await _until(lines, "ready")
            disabled = await admin.patch("/api/v1/users/bob", json={"disabled": True})
            assert disabled.status_code == 200
            rest = await asyncio.wait_for(_drain(lines), 30)
            assert "event: end" not in rest  # cut off, not finished
        await admin.post("/api/v1/jobs/stop", json={"execution_id": run["id"]})


async def _until(lines: AsyncIterator[str], text: str) -> str:
    async for line in lines:
        if text in line:
            return line
    return ""


async def _drain(lines: AsyncIterator[str]) -> str:
    return "\n".join([line async for line in lines])


async def test_a_reset_revokes_every_credential(harness: Harness) -> None:
    await harness.add_user("carol")
    token_client = await harness.token_client("carol")
    assert (await token_client.get("/api/v1/auth/me")).status_code == 200
    admin = await harness.admin()
    reset = await admin.patch("/api/v1/users/carol", json={"password": "a-new-password-9"})
    assert reset.status_code == 200, reset.text
    body = reset.json()
    assert body["revoked"]["sessions"] == "all"
    assert len(body["revoked"]["tokens"]) == 1
    assert "all 1 API token(s) of 'carol' were revoked" in body["message"]
    assert (await token_client.get("/api/v1/auth/me")).status_code == 401


async def test_users_change_their_own_password(harness: Harness) -> None:
    await harness.add_user("frank")
    frank = await harness.login("frank")
    other = await harness.login("frank")
    wrong = await frank.post(
        "/api/v1/auth/password",
        json={"current_password": "not-it", "new_password": "brand-new-pass"},
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"]["message"] == "The current password is wrong; nothing was changed"
    short = await frank.post(
        "/api/v1/auth/password", json={"current_password": USER_PASSWORD, "new_password": "x"}
    )
    assert short.status_code == 422
    changed = await frank.post(
        "/api/v1/auth/password",
        json={"current_password": USER_PASSWORD, "new_password": "brand-new-pass"},
    )
    assert changed.status_code == 200, changed.text
    assert (await frank.get("/api/v1/auth/me")).status_code == 200  # this session stays
    assert (await other.get("/api/v1/auth/me")).status_code == 401  # the others end
    fresh = harness.client()
    assert (await _login(fresh, "frank", USER_PASSWORD)).status_code == 401
    assert (await _login(fresh, "frank", "brand-new-pass")).status_code == 200
    await harness.engine.journal.flush()
    page = await harness.engine.audit_log(AuditQuery(action="user.password"))
    assert sorted(e.outcome for e in page.items) == ["failed", "ok"]


@pytest.mark.parametrize(
    ("overrides", "secure", "address"),
    [
        ({}, False, "127.0.0.1"),
        ({"trusted_proxies": ["127.0.0.0/8"]}, True, "203.0.113.9"),
        ({"public_url": "https://jobs.example.com"}, True, "127.0.0.1"),
    ],
    ids=["untrusted", "trusted-proxy", "https-public-url"],
)
async def test_forwarded_headers_count_only_from_trusted_proxies(
    tmp_path: Path, overrides: dict[str, object], secure: bool, address: str
) -> None:
    async for harness in running_harness(make_settings(tmp_path, **overrides)):
        client = harness.client(
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
        )
        ok = await _login(client, "admin", ADMIN_PASSWORD)
        assert ok.status_code == 200
        cookie = ok.headers["set-cookie"]
        assert ("; secure" in cookie.lower()) is secure, cookie
        assert (await _login(client, "admin", "wrong")).status_code == 401
        await harness.engine.journal.flush()
        page = await harness.engine.audit_log(AuditQuery(action="auth.login"))
        failed = [e for e in page.items if e.outcome == "failed"]
        assert [e.address for e in failed] == [address]

"""Sign-in, sessions, CSRF, tokens, the login rate limit, user admin, and their audit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobhost.models import AuditQuery
from tests.serverfixtures import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    Harness,
    make_settings,
    running_harness,
)


async def audit(h: Harness, action: str) -> list[Any]:
    await h.engine.journal.flush()
    page = await h.engine.audit_log(AuditQuery(action=action, limit=1000))
    return list(reversed(page.items))  # oldest first


async def test_login_me_logout(harness: Harness) -> None:
    client = harness.client()
    response = await client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "admin"
    assert body["roles"] == ["admin"]
    assert body["superuser"] is True
    cookie = response.headers["set-cookie"]
    assert "jobhost_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here

    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["csrf_token"] == body["csrf_token"]

    out = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    again = await client.get("/api/v1/auth/me")
    assert again.status_code == 401
    logins = await audit(harness, "auth.login")
    assert [(e.user, e.outcome, e.address) for e in logins] == [("admin", "ok", "127.0.0.1")]
    assert [e.user for e in await audit(harness, "auth.logout")] == ["admin"]


async def test_old_cookie_is_dead_after_logout(harness: Harness) -> None:
    client = await harness.admin()
    cookie = client.cookies.get("jobhost_session")
    await client.post("/api/v1/auth/logout")
    replay = harness.client(cookies={"jobhost_session": cookie or ""})
    response = await replay.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert "sign in again" in response.json()["error"]["message"]


async def test_wrong_password_and_unknown_user_look_the_same(harness: Harness) -> None:
    client = harness.client()
    wrong = await client.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
    unknown = await client.post("/api/v1/auth/login", json={"username": "ghost", "password": "x"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["message"] == "Invalid username or password"
    failed = await audit(harness, "auth.login")
    assert {(e.user, e.outcome) for e in failed} == {("admin", "failed"), ("ghost", "failed")}
    assert all(e.address == "127.0.0.1" for e in failed)
    assert all("x" not in str(e.details.values()) for e in failed)


async def test_login_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_attempts_per_minute=3)
    async for h in running_harness(settings):
        client = h.client()
        bad = {"username": "admin", "password": "wrong-password"}
        statuses = [
            (await client.post("/api/v1/auth/login", json=bad)).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        limited = await client.post("/api/v1/auth/login", json=bad)
        assert limited.status_code == 429
        assert "Too many sign-in attempts for 'admin'" in limited.json()["error"]["message"]
        # Even the right password waits out the minute.
        right = {"username": "admin", "password": ADMIN_PASSWORD}
        assert (await client.post("/api/v1/auth/login", json=right)).status_code == 429
        # Another username from the same address is not affected.
        await h.add_user("bob")
        ok = await client.post(
            "/api/v1/auth/login", json={"username": "bob", "password": USER_PASSWORD}
        )
        assert ok.status_code == 200


async def test_csrf_required_for_cookie_writes(harness: Harness) -> None:
    client = await harness.admin()
    csrf = client.headers.pop("X-CSRF-Token")
    missing = await client.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
    assert missing.status_code == 403
    assert missing.json()["error"]["message"] == "CSRF token missing or invalid"
    wrong = await client.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Hello"}, headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status_code == 403
    # Reads need no CSRF token.
    assert (await client.get("/api/v1/jobs/running")).status_code == 200
    ok = await client.post(
        "/api/v1/jobs/start", json={"job_id": "Lab/Hello"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 202
    denied = [e for e in await audit(harness, "http.denied") if e.user == "admin"]
    assert len(denied) == 2
    assert denied[0].details["reason"] == "CSRF token missing or invalid"
    await harness.wait(ok.json()["id"])


async def test_bearer_token_needs_no_csrf(harness: Harness) -> None:
    client = await harness.token_client("admin", ADMIN_PASSWORD)
    response = await client.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})
    assert response.status_code == 202
    assert response.json()["trigger"] == "token"
    await harness.wait(response.json()["id"])


async def test_token_create_list_revoke(harness: Harness) -> None:
    await harness.add_user("bob")
    bob = await harness.login("bob")
    created = await bob.post("/api/v1/auth/tokens", json={"name": "ci", "expires_in_days": 7})
    assert created.status_code == 201
    body = created.json()
    assert body["token"].startswith("jh_")
    assert body["name"] == "ci"
    assert body["expires_at"].endswith("Z")

    listed = (await bob.get("/api/v1/auth/tokens")).json()["tokens"]
    assert [t["name"] for t in listed] == ["ci"]
    assert all("token" not in t and "token_hash" not in t for t in listed)

    bearer = harness.client(headers={"Authorization": f"Bearer {body['token']}"})
    me = await bearer.get("/api/v1/auth/me")
    assert me.json()["username"] == "bob"
    assert "csrf_token" not in me.json()

    # Another user cannot revoke it; it is not even visible to them.
    await harness.add_user("carol")
    carol = await harness.login("carol")
    other = await carol.delete(f"/api/v1/auth/tokens/{body['id']}")
    assert other.status_code == 404
    assert (await carol.get("/api/v1/auth/tokens?all=true")).status_code == 403

    admin = await harness.admin()
    everyone = (await admin.get("/api/v1/auth/tokens?all=true")).json()["tokens"]
    assert body["id"] in {t["id"] for t in everyone}

    revoked = await bob.delete(f"/api/v1/auth/tokens/{body['id']}")
    assert revoked.status_code == 204
    after = await bearer.get("/api/v1/auth/me")
    assert after.status_code == 401
    assert "Invalid, expired or revoked API token" in after.json()["error"]["message"]

    created_events = await audit(harness, "token.create")
    assert [(e.user, e.target) for e in created_events] == [("bob", body["id"])]
    assert body["token"] not in str(created_events[0].details)
    assert [(e.user, e.target) for e in await audit(harness, "token.revoke")] == [
        ("bob", body["id"])
    ]


async def test_expired_token_is_refused(harness: Harness) -> None:
    client = await harness.admin()
    body = (
        await client.post("/api/v1/auth/tokens", json={"name": "short", "expires_in_days": 1})
    ).json()
    bearer = harness.client(headers={"Authorization": f"Bearer {body['token']}"})
    assert (await bearer.get("/api/v1/auth/me")).status_code == 200
    real_clock = harness.engine.clock
    harness.engine.clock = lambda: real_clock() + timedelta(days=2)
    try:
        response = await bearer.get("/api/v1/auth/me")
    finally:
        harness.engine.clock = real_clock
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer jh_forged", "Basic YWRtaW46eA==", "Bearer", "jh_x"],
)
async def test_bad_authorization_headers(harness: Harness, header: str) -> None:
    client = harness.client(headers={"Authorization": header})
    response = await client.get("/api/v1/jobs/catalog")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


async def test_users_admin_crud(harness: Harness) -> None:
    admin = await harness.admin()
    created = await admin.post(
        "/api/v1/users", json={"username": "dave", "password": "long-enough", "roles": ["ops"]}
    )
    assert created.status_code == 201
    assert created.json()["roles"] == ["ops"]
    assert "password" not in str(created.json())
    dup = await admin.post("/api/v1/users", json={"username": "dave", "password": "long-enough"})
    assert dup.status_code == 409
    short = await admin.post("/api/v1/users", json={"username": "eve", "password": "Tiny7"})
    assert short.status_code == 422
    assert "password" in short.json()["error"]["message"]
    assert "Tiny7" not in str(short.json())  # the rejected password is never echoed
    bad_name = await admin.post(
        "/api/v1/users", json={"username": "../x", "password": "long-enough"}
    )
    assert bad_name.status_code == 422
    assert "username" in bad_name.json()["error"]["message"]

    dave = await harness.login("dave", "long-enough")
    assert (await dave.get("/api/v1/users")).status_code == 403

    names = [u["username"] for u in (await admin.get("/api/v1/users")).json()["users"]]
    assert names == sorted(["admin", "dave"]) or set(names) == {"admin", "dave"}

    patched = await admin.patch("/api/v1/users/dave", json={"roles": ["ops", "qa"]})
    assert patched.status_code == 200
    assert patched.json()["roles"] == ["ops", "qa"]
    assert (await dave.get("/api/v1/auth/me")).json()["roles"] == ["ops", "qa"]

    disabled = await admin.patch("/api/v1/users/dave", json={"disabled": True})
    assert disabled.json()["disabled"] is True
    assert (await dave.get("/api/v1/auth/me")).status_code == 401  # session gone
    login = await harness.client().post(
        "/api/v1/auth/login", json={"username": "dave", "password": "long-enough"}
    )
    assert login.status_code == 401

    assert (await admin.patch("/api/v1/users/nobody", json={"disabled": True})).status_code == 404
    assert (await admin.delete("/api/v1/users/admin")).status_code == 409
    assert (await admin.delete("/api/v1/users/dave")).status_code == 204
    assert (await admin.delete("/api/v1/users/dave")).status_code == 404

    assert [e.target for e in await audit(harness, "user.create")] == ["admin", "dave"]
    updates = await audit(harness, "user.update")
    assert [e.details.get("roles") for e in updates] == [["ops", "qa"], None]
    assert [e.target for e in await audit(harness, "user.delete")] == ["dave"]
    assert all("long-enough" not in str(e.details) for e in updates)


async def test_anonymous_denials_are_audited(harness: Harness) -> None:
    response = await harness.client().get("/api/v1/jobs/running")
    assert response.status_code == 401
    assert "Sign in first" in response.json()["error"]["message"]
    denied = await audit(harness, "http.denied")
    assert [(e.user, e.target, e.outcome) for e in denied] == [
        (None, "/api/v1/jobs/running", "denied")
    ]


async def test_first_start_prints_one_time_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, admin_password=None)
    async for h in running_harness(settings):
        password = h.app.state.one_time_password
        assert password
        assert password in capsys.readouterr().err
        client = h.client()
        ok = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": password}
        )
        assert ok.status_code == 200
    # The second start finds a user and prints nothing.
    async for h in running_harness(settings):
        assert h.app.state.one_time_password is None
        assert "one-time password" not in capsys.readouterr().err

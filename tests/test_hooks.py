"""Job webhooks: made and rotated by the start right, the URL shown once and stored hashed,
an optional HMAC signature over the raw body, the body's declared fields as variables,
a per-hook rate limit, and the ``webhook`` trigger in history and the audit."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobhost.hooks import HookTokenFilter
from jobhost.models import AuditQuery, User
from jobhost.store.hooks import webhooks
from tests.jobfolders import write_job
from tests.serverfixtures import Harness, make_settings, running_harness, write_apps

ECHO = "import os\nprint('branch', os.environ['JOBHOST_VAR_Branch'], flush=True)\n"
DEPLOYERS = {
    "roles_view": ["deployers", "watchers"],
    "roles_start": ["deployers"],
    "template_variables": {
        "Branch": {"description": "branch to deploy", "pattern": "[a-z0-9-]+"},
    },
    "max_concurrent": 0,
}


@pytest.fixture(name="h")
async def hooks_harness(tmp_path: Path, db_url: str) -> AsyncIterator[Harness]:
    """On SQLite and on PostgreSQL: the hooks table is written with an upsert."""
    apps = tmp_path / "apps"
    write_apps(apps)
    write_job(
        apps,
        "Hooks",
        "Deploy",
        {"Name": "Deploy", "webhook": {"enabled": True}, **DEPLOYERS},
        script_text=ECHO,
    )
    write_job(
        apps,
        "Hooks",
        "Signed",
        {
            "Name": "Signed",
            "webhook": {"enabled": True, "signature": "hmac-sha256", "rate_per_minute": 4},
            **DEPLOYERS,
        },
        script_text=ECHO,
    )
    write_job(apps, "Hooks", "Off", {"Name": "Off", **DEPLOYERS}, script_text=ECHO)
    async for harness in running_harness(make_settings(tmp_path, database_url=db_url)):
        await harness.add_user("dora", ["deployers"])
        await harness.add_user("walt", ["watchers"])
        yield harness


def signed(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_hook_starts_its_job_as_its_creator_with_the_bodys_variables(h: Harness) -> None:
    dora = await h.login("dora")
    made = await dora.post("/api/v1/jobs/catalog/Hooks/Deploy/hook")
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["signing_secret"] is None
    assert hook["url_path"] == f"/api/v1/hooks/{hook['token']}"
    shown = (await dora.get("/api/v1/jobs/catalog/Hooks/Deploy/hook")).json()
    assert shown["exists"] is True
    assert shown["created_by"] == "dora"
    assert hook["token"] not in json.dumps(shown)

    outsider = h.client()  # no session, no token: the URL is the secret
    payload = {"Branch": "main", "repository": {"name": "shop"}, "Unrelated": [1, 2]}
    called = await outsider.post(hook["url_path"], content=json.dumps(payload))
    assert called.status_code == 202, called.text
    run = called.json()
    assert run["trigger"] == "webhook"
    assert run["user"] == "dora"
    assert run["variables"] == {"Branch": "main"}
    done = await h.wait(run["id"])
    assert done.status.value == "succeeded"
    output = (await dora.get(f"/api/v1/jobs/output/{run['id']}")).json()["output"]
    assert output == "branch main\n"
    history = (await dora.get("/api/v1/jobs/history?job_id=Hooks/Deploy")).json()
    assert [e["trigger"] for e in history["executions"]] == ["webhook"]

    audit = (await h.engine.audit_log(AuditQuery(target="Hooks/Deploy"))).items
    assert ("hook.create", "dora") in {(e.action, e.user) for e in audit}
    assert any(e.action == "job.start" and e.details["trigger"] == "webhook" for e in audit)

    # Stored hashed: the token is nowhere in the database.
    store = h.engine.store
    with store.read() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(webhooks)).mappings()]
    assert rows[0]["token_hash"] == hashlib.sha256(hook["token"].encode()).hexdigest()
    assert hook["token"] not in json.dumps(rows, default=str)


async def test_a_variable_that_fails_its_rules_is_a_422(h: Harness) -> None:
    dora = await h.login("dora")
    hook = (await dora.post("/api/v1/jobs/catalog/Hooks/Deploy/hook")).json()
    client = h.client()
    bad = await client.post(hook["url_path"], content=b'{"Branch": "Main Branch!"}')
    assert bad.status_code == 422
    assert "Branch must match the pattern" in bad.json()["error"]["message"]
    missing = await client.post(hook["url_path"], content=b"")
    assert missing.status_code == 422
    assert "Missing required variables: Branch" in missing.json()["error"]["message"]
    not_object = await client.post(hook["url_path"], content=b"[1, 2]")
    assert not_object.status_code == 400
    wrong_type = await client.post(hook["url_path"], content=b'{"Branch": {"x": 1}}')
    assert wrong_type.status_code == 422


async def test_a_signed_hook_needs_the_right_signature_and_keeps_its_rate(h: Harness) -> None:
    dora = await h.login("dora")
    hook = (await dora.post("/api/v1/jobs/catalog/Hooks/Signed/hook")).json()
    secret = hook["signing_secret"]
    assert secret
    key = h.settings.data_dir / "webhook.key"  # what the secret derives from, private
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32
    assert [p.name for p in h.settings.data_dir.glob(".webhook.key.*")] == []
    client = h.client()
    body = b'{"Branch": "release-1"}'
    unsigned = await client.post(hook["url_path"], content=body)
    assert unsigned.status_code == 401
    assert "X-Hub-Signature-256 header is missing" in unsigned.json()["error"]["message"]
    forged = await client.post(
        hook["url_path"],
        content=body,
        headers={"X-Hub-Signature-256": signed("not-the-secret", body)},
    )
    assert forged.status_code == 401
    assert "does not match the body" in forged.json()["error"]["message"]
    tampered = await client.post(
        hook["url_path"],
        content=b'{"Branch": "evil"}',
        headers={"X-Hub-Signature-256": signed(secret, body)},
    )
    assert tampered.status_code == 401

    ok = await client.post(
        hook["url_path"], content=body, headers={"X-Hub-Signature-256": signed(secret, body)}
    )
    assert ok.status_code == 202, ok.text
    await h.wait(ok.json()["id"])
    # rate_per_minute is 4, and the refused calls above counted: the fifth waits.
    limited = await client.post(
        hook["url_path"], content=body, headers={"X-Hub-Signature-256": signed(secret, body)}
    )
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "4 calls a minute" in limited.json()["error"]["message"]

    denied = (await h.engine.audit_log(AuditQuery(action="hook.call"))).items
    assert len([e for e in denied if e.outcome == "denied"]) >= 2


async def test_rotation_retires_the_old_url_and_changes_the_secret(h: Harness) -> None:
    dora = await h.login("dora")
    first = (await dora.post("/api/v1/jobs/catalog/Hooks/Signed/hook")).json()
    again = await dora.post("/api/v1/jobs/catalog/Hooks/Signed/hook")
    assert again.status_code == 409
    assert "jobhost hook rotate Hooks/Signed" in again.json()["error"]["message"]
    second = await dora.post("/api/v1/jobs/catalog/Hooks/Signed/hook/rotate")
    assert second.status_code == 201
    new = second.json()
    assert new["token"] != first["token"]
    assert new["signing_secret"] != first["signing_secret"]
    client = h.client()
    body = b'{"Branch": "x"}'
    old = await client.post(
        first["url_path"],
        content=body,
        headers={"X-Hub-Signature-256": signed(first["signing_secret"], body)},
    )
    assert old.status_code == 404
    fresh = await client.post(
        new["url_path"],
        content=body,
        headers={"X-Hub-Signature-256": signed(new["signing_secret"], body)},
    )
    assert fresh.status_code == 202, fresh.text
    await h.wait(fresh.json()["id"])


async def test_who_may_make_a_hook_and_when_it_refuses(h: Harness) -> None:
    walt = await h.login("walt")
    denied = await walt.post("/api/v1/jobs/catalog/Hooks/Deploy/hook")
    assert denied.status_code == 403
    assert "requires the start right" in denied.json()["error"]["message"]
    dora = await h.login("dora")
    off = await dora.post("/api/v1/jobs/catalog/Hooks/Off/hook")
    assert off.status_code == 409
    assert '"webhook": {"enabled": true}' in off.json()["error"]["message"]
    nothing = await dora.post("/api/v1/jobs/catalog/Hooks/Deploy/hook/rotate")
    assert nothing.status_code == 404
    unknown = await h.client().post("/api/v1/hooks/jhh_nothing-here", content=b"{}")
    assert unknown.status_code == 404

    hook = (await dora.post("/api/v1/jobs/catalog/Hooks/Deploy/hook")).json()
    # The creator loses the start right: the hook refuses to start as her.
    await h.engine.journal.call(
        h.engine.store.save_user,
        User(username="dora", password_hash="x", roles=frozenset({"watchers"})),
    )
    refused = await h.client().post(hook["url_path"], content=b'{"Branch": "main"}')
    assert refused.status_code == 403


def test_an_access_log_line_never_holds_a_hook_token() -> None:
    # The record uvicorn's access logger makes: (client, method, path, version, status).
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/api/v1/hooks/jhh_s3cret-token?x=1", "1.1", 202),
        None,
    )
    assert HookTokenFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /api/v1/hooks/***?x=1 HTTP/1.1" 202'

"""Hostile input gets the right 4xx in the one error shape, and the server keeps answering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serverfixtures import (
    Harness,
    make_settings,
    running_harness,
)

TRAVERSAL_BODIES = [
    "../etc/passwd",
    "Lab/../../etc",
    "..%2Fetc/passwd",
    "%2e%2e/x",
    "/etc/passwd",
    "Lab/Hello\x00",
    "Lab",
    "Lab/Hello/extra",
    "",
    "Lab/.hidden",
]


@pytest.mark.parametrize("job_id", TRAVERSAL_BODIES)
async def test_traversal_job_ids_in_bodies_are_400(harness: Harness, job_id: str) -> None:
    admin = await harness.admin()
    response = await admin.post("/api/v1/jobs/start", json={"job_id": job_id})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid job ID")
    assert (await admin.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/catalog/../../etc/passwd",
        "/api/v1/jobs/catalog/..%2F..%2Fetc/passwd",
        "/api/v1/jobs/catalog/%2e%2e/passwd",
        "/api/v1/jobs/catalog/Lab/%2e%2e",
        "/api/v1/jobs/catalog/Lab/Hello%00",
        "/api/v1/jobs/catalog//etc/passwd",
        "/api/v1/jobs/catalog/Lab/..%2F..%2Fsecret/samples",
        "/api/v1/jobs/output/..%2F..%2Fjobhost.db",
    ],
)
async def test_traversal_in_paths_never_reaches_a_file(harness: Harness, path: str) -> None:
    admin = await harness.admin()
    response = await admin.get(path)
    assert response.status_code in (400, 404)
    assert set(response.json()) == {"error"}
    assert "root:" not in response.text


async def test_unknown_fields_and_wrong_types_are_422(harness: Harness) -> None:
    admin = await harness.admin()
    extra = await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello", "force": True})
    assert extra.status_code == 422
    assert "unknown body field 'force'" in extra.json()["error"]["message"]
    wrong = await admin.post("/api/v1/jobs/start", json={"job_id": 5})
    assert wrong.status_code == 422
    assert "body field 'job_id'" in wrong.json()["error"]["message"]
    missing = await admin.post("/api/v1/jobs/start", json={})
    assert missing.status_code == 422
    assert "body field 'job_id' is required" in missing.json()["error"]["message"]
    listy = await admin.post("/api/v1/jobs/start", json=["Lab/Hello"])
    assert listy.status_code == 422
    bad_limit = await admin.get("/api/v1/jobs/history?limit=lots")
    assert bad_limit.status_code == 422
    assert "query parameter 'limit'" in bad_limit.json()["error"]["message"]


async def test_malformed_json_is_400(harness: Harness) -> None:
    admin = await harness.admin()
    response = await admin.post(
        "/api/v1/jobs/start", content=b'{"job_id": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


async def test_huge_body_is_413(tmp_path: Path) -> None:
    async for h in running_harness(make_settings(tmp_path, max_request_bytes=2048)):
        admin = await h.admin()
        big = {"job_id": "Lab/Hello", "variables": {"x": "a" * 5000}}
        response = await admin.post("/api/v1/jobs/start", json=big)
        assert response.status_code == 413
        assert "larger than the limit of 2048 bytes" in response.json()["error"]["message"]

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 1000

        streamed = await admin.post(
            "/api/v1/jobs/start", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert (await admin.get("/healthz")).json()["status"] == "ok"


async def test_bad_cursor_and_times(harness: Harness) -> None:
    admin = await harness.admin()
    cursor = await admin.get("/api/v1/jobs/history?cursor=garbage!!")
    assert cursor.status_code == 400
    assert "Invalid cursor" in cursor.json()["error"]["message"]
    since = await admin.get("/api/v1/jobs/history?since=yesterday")
    assert since.status_code == 400
    assert "Invalid since 'yesterday'" in since.json()["error"]["message"]
    audit_cursor = await admin.get("/api/v1/audit?cursor=%00%01")
    assert audit_cursor.status_code == 400


@pytest.mark.parametrize("cookie", ["garbage", "", "x" * 4000, "' OR 1=1 --", "jh_" + "A" * 43])
async def test_forged_cookies_are_401(harness: Harness, cookie: str) -> None:
    client = harness.client(cookies={"jobhost_session": cookie})
    response = await client.get("/api/v1/jobs/catalog")
    assert response.status_code == 401
    assert (await client.get("/healthz")).status_code == 200


async def test_bad_offsets_and_last_event_id(harness: Harness) -> None:
    admin = await harness.admin()
    run = (await admin.post("/api/v1/jobs/start", json={"job_id": "Lab/Hello"})).json()
    await harness.wait(run["id"])
    negative = await admin.get(f"/api/v1/jobs/output/{run['id']}?offset=-1")
    assert negative.status_code == 422
    bad_id = await admin.get(
        f"/api/v1/jobs/output/{run['id']}/stream", headers={"Last-Event-ID": "abc"}
    )
    assert bad_id.status_code == 400
    assert "Invalid Last-Event-ID 'abc'" in bad_id.json()["error"]["message"]
    unknown = await admin.get("/api/v1/jobs/output/ffffffff/stream")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "No execution 'ffffffff'"


async def test_unknown_route_and_method(harness: Harness) -> None:
    client = harness.client()
    missing = await client.get("/api/v1/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = await client.delete("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_api_docs_run_under_a_nonce_policy_and_the_ui_stays_strict(harness: Harness) -> None:
    docs = await harness.client().get("/docs")
    policy = docs.headers["content-security-policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert docs.status_code == 200
    assert f'<script nonce="{nonce}">' in docs.text
    assert "<script>" not in docs.text
    ui = await harness.client().get("/")
    assert "script-src 'self';" in ui.headers["content-security-policy"]
    assert "nonce" not in ui.headers["content-security-policy"]

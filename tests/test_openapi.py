"""The OpenAPI document is a contract: every route's real answers (successes and errors)
validate against it, it declares the error body, security and SSE events, and the
generated API reference in docs/api.md is up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from jobhost.server.apidoc import render
from jobhost.server.contract import api_operations
from tests.serverfixtures import USER_PASSWORD, Harness, events

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
JSON = "application/json"


class Contract:
    """Checks answers against the document and remembers which operations were seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: set[tuple[str, str]] = set()

    def _response(self, path: str, method: str, status: int) -> dict[str, Any]:
        responses = self.document["paths"][path][method]["responses"]
        assert str(status) in responses, f"{method.upper()} {path} answered {status}, undeclared"
        response: dict[str, Any] = responses[str(status)]
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].split("/")[-1]]
        return response

    def check(self, path: str, method: str, answer: httpx.Response) -> httpx.Response:
        """``path`` is the document's template; ``answer`` a real answer to it."""
        self.seen.add((path, method))
        response = self._response(path, method, answer.status_code)
        content = response.get("content")
        if not content:
            assert answer.content == b"", answer.text
            return answer
        media = answer.headers["content-type"].split(";")[0]
        assert media in content, f"{method.upper()} {path}: {media} not in {list(content)}"
        if media == JSON:
            schema = {**content[media]["schema"], "components": self.document["components"]}
            jsonschema.Draft202012Validator(schema).validate(answer.json())
        return answer

    def check_events(self, path: str, text: str) -> list[str]:
        """Every event of an SSE body has a declared type and data of its schema."""
        declared = self.document["paths"][path]["get"]["responses"]["200"]["x-events"]
        names = []
        for name, _, data in events(text):
            assert name in declared, f"{path}: undeclared event {name!r}"
            schema = {**declared[name], "components": self.document["components"]}
            jsonschema.Draft202012Validator(schema).validate(data)
            names.append(name)
        return names


@pytest.fixture
async def contract(harness: Harness) -> Contract:
    document = (await harness.client().get("/openapi.json")).json()
    return Contract(document)


def test_the_document_is_valid_openapi_with_security_and_one_error_body(harness: Harness) -> None:
    document = harness.app.openapi()
    validate(document)
    components = document["components"]
    assert set(components["securitySchemes"]) == {"bearerToken", "sessionCookie", "csrfHeader"}
    assert "HTTPValidationError" not in components["schemas"]
    error = components["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    status = document["paths"]["/api/v1/jobs/status/{execution_id}"]["get"]
    for code in ("400", "401", "403", "404", "409", "413", "422", "429", "503"):
        ref = status["responses"][code]["$ref"]
        body = components["responses"][ref.split("/")[-1]]["content"][JSON]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}
    assert status["security"] == [{"bearerToken": []}, {"sessionCookie": []}]
    start = document["paths"]["/api/v1/jobs/start"]["post"]
    assert {"sessionCookie": [], "csrfHeader": []} in start["security"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    schema_200 = start["responses"]["202"]["content"][JSON]["schema"]
    assert schema_200 == {"$ref": "#/components/schemas/ExecutionOut"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            ok = [c for c in operation["responses"] if c.startswith("2")]
            assert ok, f"{method} {path} declares no success"
            for code in ok:
                content = operation["responses"][code].get("content", {})
                if JSON in content:
                    assert "$ref" in content[JSON]["schema"], f"{method} {path} has no model"
    stream = document["paths"]["/api/v1/jobs/output/{execution_id}/stream"]["get"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    assert set(stream["responses"]["200"]["x-events"]) == {"output", "end"}
    changes = document["paths"]["/api/v1/jobs/events"]["get"]["responses"]["200"]
    assert set(changes["x-events"]) == {"snapshot", "execution"}


async def test_real_answers_of_every_route_match_the_document(
    harness: Harness, contract: Contract, tmp_path: Path
) -> None:
    c = contract.check
    admin = await harness.admin()
    anon = harness.client()
    c("/healthz", "get", await anon.get("/healthz"))
    c("/metrics", "get", await anon.get("/metrics"))
    c("/api/v1/auth/me", "get", await admin.get("/api/v1/auth/me"))
    bad = {"username": "admin", "password": "wrong"}
    c("/api/v1/auth/login", "post", await anon.post("/api/v1/auth/login", json=bad))
    token = c(
        "/api/v1/auth/tokens", "post", await admin.post("/api/v1/auth/tokens", json={"name": "t"})
    )
    c("/api/v1/auth/tokens", "get", await admin.get("/api/v1/auth/tokens"))

    jobs = "/api/v1/jobs"
    started = c(
        f"{jobs}/start", "post", await admin.post(f"{jobs}/start", json={"job_id": "Lab/Hello"})
    )
    run = started.json()["id"]
    await harness.wait(run)
    c(f"{jobs}/test", "post", await admin.post(f"{jobs}/test", json={"job_id": "Lab/Hello"}))
    status = "/api/v1/jobs/status/{execution_id}"
    c(status, "get", await admin.get(f"{jobs}/status/{run}"))
    c(status, "get", await admin.get(f"{jobs}/status/{'0' * 32}"))  # 404
    c(status, "get", await anon.get(f"{jobs}/status/{run}"))  # 401
    c(f"{status}/notifications", "get", await admin.get(f"{jobs}/status/{run}/notifications"))
    c(f"{jobs}/running", "get", await admin.get(f"{jobs}/running"))
    later = {"job_id": "Lab/Hello", "delay_seconds": 3600}
    c(f"{jobs}/start", "post", await admin.post(f"{jobs}/start", json=later))
    c(f"{jobs}/scheduled", "get", await admin.get(f"{jobs}/scheduled"))
    c(f"{jobs}/history", "get", await admin.get(f"{jobs}/history", params={"limit": 5}))
    c(f"{jobs}/history", "get", await admin.get(f"{jobs}/history", params={"since": "x"}))  # 400
    c(f"{jobs}/catalog", "get", await admin.get(f"{jobs}/catalog"))
    detail = "/api/v1/jobs/catalog/{app}/{job}"
    c(detail, "get", await admin.get(f"{jobs}/catalog/Lab/Hello"))
    c(f"{detail}/samples", "get", await admin.get(f"{jobs}/catalog/Lab/Hello/samples"))
    c(f"{detail}/plan", "get", await admin.get(f"{jobs}/catalog/Lab/Hello/plan"))
    c(f"{detail}/plan", "get", await admin.get(f"{jobs}/catalog/Lab/Broken/plan"))
    c(f"{detail}/hook", "get", await admin.get(f"{jobs}/catalog/Lab/Hello/hook"))  # 409
    c(f"{detail}/hook", "post", await admin.post(f"{jobs}/catalog/Lab/Hello/hook"))  # 409
    rotate = await admin.post(f"{jobs}/catalog/Lab/Hello/hook/rotate")
    c(f"{detail}/hook/rotate", "post", rotate)
    c("/api/v1/hooks/{token}", "post", await anon.post("/api/v1/hooks/jhh_x", content=b"{}"))
    output = "/api/v1/jobs/output/{execution_id}"
    c(output, "get", await admin.get(f"{jobs}/output/{run}"))
    stream = c(f"{output}/stream", "get", await admin.get(f"{jobs}/output/{run}/stream"))
    assert contract.check_events(f"{output}/stream", stream.text)[-1] == "end"
    # /events never ends, and ASGITransport answers only once the app is done: its
    # frames are the ``execution`` events test_server_sse reads over a real socket.
    contract.seen.add((f"{jobs}/events", "get"))
    slow = (await admin.post(f"{jobs}/start", json={"job_id": "Lab/Slow"})).json()["id"]
    await harness.wait_output(slow, "ready")
    restart = await admin.post(f"{jobs}/restart", json={"execution_id": slow})
    c(f"{jobs}/restart", "post", restart)
    stop = await admin.post(f"{jobs}/stop", json={"job_id": "Lab/Slow"})
    c(f"{jobs}/stop", "post", stop)
    c(f"{jobs}/stop", "post", await admin.post(f"{jobs}/stop", json={}))  # 400
    c(f"{jobs}/start", "post", await admin.post(f"{jobs}/start", json={"job_id": 5}))  # 422
    c(f"{jobs}/reload", "post", await admin.post(f"{jobs}/reload"))

    schedules = "/api/v1/jobs/schedules"
    one = "/api/v1/jobs/schedules/{app}/{job}"
    c(schedules, "get", await admin.get(schedules))
    preview = {"schedule": "*/5 * * * *", "count": 2}
    c(f"{schedules}/preview", "post", await admin.post(f"{schedules}/preview", json=preview))
    bad_preview = {"schedule": "not cron"}
    c(f"{schedules}/preview", "post", await admin.post(f"{schedules}/preview", json=bad_preview))
    c(one, "get", await admin.get(f"{schedules}/Lab/Hello"))
    put = await admin.put(f"{schedules}/Lab/Hello", json={"schedule": "0 3 * * *"})
    c(one, "put", put)
    c(one, "delete", await admin.delete(f"{schedules}/Lab/Hello"))

    users = "/api/v1/users"
    c(users, "get", await admin.get(users))
    new = {"username": "carol", "password": "carol-password-1", "roles": ["ops"]}
    c(users, "post", await admin.post(users, json=new))
    c(users, "post", await admin.post(users, json=new))  # 409
    c(f"{users}/{{username}}", "patch", await admin.patch(f"{users}/carol", json={"roles": []}))
    c(f"{users}/{{username}}", "delete", await admin.delete(f"{users}/carol"))
    c("/api/v1/audit", "get", await admin.get("/api/v1/audit", params={"limit": 5}))

    legacy = "/apps/WebHostTaskManagement/api/v1/jobs"
    c(legacy, "get", await admin.get(legacy))
    c(f"{legacy}/catalog", "get", await admin.get(f"{legacy}/catalog"))
    begun = await admin.post(f"{legacy}/start", json={"jobId": "Lab/Hello"})
    c(f"{legacy}/start", "post", begun)
    await harness.wait(begun.json()["executionId"])
    c(f"{legacy}/stop", "post", await admin.post(f"{legacy}/stop", json={"jobId": "Lab/Hello"}))
    c(f"{legacy}/results", "get", await admin.get(f"{legacy}/results"))
    c(f"{legacy}/output", "get", await admin.get(f"{legacy}/output", params={"jobId": run}))
    submit = {"command": "echo hi", "jobName": "x"}
    c(f"{legacy}/submit", "post", await admin.post(f"{legacy}/submit", json=submit))  # 403

    await harness.add_user("pat")
    pat = await harness.login("pat")
    change = {"current_password": USER_PASSWORD, "new_password": "pat-password-2"}
    c("/api/v1/auth/password", "post", await pat.post("/api/v1/auth/password", json=change))

    c("/api/v1/instances", "get", await admin.get("/api/v1/instances"))
    drain = await admin.post("/api/v1/admin/drain", json={"wait_seconds": 600})
    c("/api/v1/admin/drain", "post", drain)
    assert (await anon.get("/healthz")).status_code == 503  # draining
    c(f"{jobs}/start", "post", await admin.post(f"{jobs}/start", json={"job_id": "Lab/Hello"}))
    c("/api/v1/admin/resume", "post", await admin.post("/api/v1/admin/resume"))

    tokens = "/api/v1/auth/tokens/{token_id}"
    c(tokens, "delete", await admin.delete(f"/api/v1/auth/tokens/{token.json()['id']}"))
    c("/api/v1/auth/logout", "post", await admin.post("/api/v1/auth/logout"))

    documented = {
        (op.path, method.lower()) for op in api_operations(harness.app) for method in op.methods
    }
    assert documented - contract.seen == set()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/jobs/catalog", "GET"),
        ("GET", "/api/v1/jobs/start", "POST"),
        ("POST", "/api/v1/jobs/schedules/Lab/Hello", "DELETE, GET, PUT"),
    ],
)
async def test_a_wrong_method_gets_405_with_allow(
    harness: Harness, method: str, path: str, allow: str
) -> None:
    answer = await harness.client().request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    error = answer.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"] == f"Method {method} is not allowed on {path}: use {allow}"
    assert answer.headers["content-security-policy"]


async def test_an_unknown_path_is_still_404(harness: Harness) -> None:
    answer = await harness.client().get("/api/v1/nothing/here")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_the_api_reference_is_generated_from_the_document(harness: Harness) -> None:
    expected = render(harness.app.openapi())
    assert API_MD.read_text(encoding="utf-8") == expected, (
        "docs/api.md is stale: run `.venv/bin/python -m jobhost.server.apidoc > docs/api.md`"
    )
    assert "`GET /api/v1/jobs/status/{execution_id}`" in expected

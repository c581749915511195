"""Schemathesis over the OpenAPI document against a real ``jobhost serve`` process: no
answer may be a 5xx, or contradict the document (status, content type, headers, body).

In ``make test`` the budget is small and fixed (``FUZZ_EXAMPLES`` examples per operation,
default 4, derandomized: the same cases every run); ``make fuzz`` runs the same test
with a large budget and a random seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serverfixtures import ADMIN_PASSWORD, write_apps
from tests.test_server_process import REPO, free_port

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"  # make fuzz: a new seed each run
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Endless streams: they answer only when the client goes away (their frames are checked
# in test_openapi and test_server_sse).
STREAMS = ("/api/v1/jobs/events", "/api/v1/jobs/output/{execution_id}/stream")
# A drain ends the server once nothing runs (by design, tests/test_drain.py): fuzzing it
# would take the server away from every operation after it.
ENDS_THE_SERVER = ("/api/v1/admin/drain",)

pytestmark = pytest.mark.slow


@dataclass
class Server:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server with the test apps; the admin's bearer token for the cases."""
    root = tmp_path_factory.mktemp("fuzz")
    write_apps(root / "apps")
    port = free_port()
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "JOBHOST_CONFIG": str(root / "none.toml"),
        "JOBHOST_LOGIN_ATTEMPTS_PER_MINUTE": "1000",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-c", "from jobhost.cli import main; main()"]
    command += ["--apps", str(root / "apps"), "--data-dir", str(root / "data"), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command, env=env, cwd=root, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the banner is printed once the engine is open and bound
            if "JobHost serving" in line:
                break
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            login = {"username": "admin", "password": ADMIN_PASSWORD}
            session = client.post("/api/v1/auth/login", json=login)
            assert session.status_code == 200, session.text
            client.headers["X-CSRF-Token"] = session.json()["csrf_token"]
            token = client.post("/api/v1/auth/tokens", json={"name": "fuzz"}).json()["token"]
        yield Server(url=url, headers={"Authorization": f"Bearer {token}"})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def api(server: Server) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    for path in (*STREAMS, *ENDS_THE_SERVER):
        loaded = loaded.exclude(path=path)
    return loaded


def fuzz(operation: Any, server: Server) -> None:
    """Run the budget of generated cases for one operation; raises on the first failure."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=server.headers, checks=CHECKS, timeout=30)

    run()


@pytest.mark.timeout(900)  # a busy machine; the budget itself is a few seconds of requests
def test_no_server_error_and_no_answer_against_the_document(api: Any, server: Server) -> None:
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz(operation, server)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}:\n{exc}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)

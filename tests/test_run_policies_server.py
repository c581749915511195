"""Retries and run-at across a real server restart: two ``jobhost serve`` processes, one
after the other, on one data dir; the second takes over what the first left due."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobfolders import write_job
from tests.serverfixtures import ADMIN_PASSWORD
from tests.test_run_policies import FLAKY
from tests.test_server_process import REPO, free_port

pytestmark = pytest.mark.slow

WAIT = 120.0


@contextmanager
def serve(tmp_path: Path, port: int) -> Iterator[httpx.Client]:
    """A signed-in client of a real server; the server gets SIGTERM on exit."""
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "JOBHOST_CONFIG": str(tmp_path / "none.toml"),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-c", "from jobhost.cli import main; main()"]
    command += ["--apps", str(tmp_path / "apps"), "--data-dir", str(tmp_path / "data")]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the banner is printed once the engine is open and bound
            if "JobHost serving" in line:
                break
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            login = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert login.status_code == 200, login.text
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            yield client
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def eventually(read: Callable[[], Any], test: Callable[[Any], bool]) -> Any:
    """``read()`` once ``test`` holds for it (a condition, with a generous deadline)."""
    deadline = time.monotonic() + WAIT
    while True:
        value = read()
        if test(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {WAIT} s; last value {value!r}")
        time.sleep(0.2)


def test_a_due_retry_and_a_run_at_start_survive_a_server_restart(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(
        apps,
        "Demo",
        "Flaky",
        {
            "Name": "Flaky",
            "template_variables": {
                "SucceedAt": {"description": "n", "type": "integer", "default": 2},
                "HangAt": {"description": "n", "type": "integer", "default": 0},
            },
            # Due 15 to 30 s after the failure: long enough to restart the server first.
            "retry": {"attempts": 2, "backoff_seconds": 30, "max_backoff_seconds": 30},
        },
        script_text=FLAKY,
    )
    write_job(apps, "Demo", "Later", {"Name": "Later"}, script_text="print('later')\n")
    port = free_port()

    with serve(tmp_path, port) as client:
        first = client.post("/api/v1/jobs/start", json={"job_id": "Demo/Flaky"}).json()
        at = (datetime.now(UTC) + timedelta(seconds=20)).astimezone().isoformat()
        later = client.post("/api/v1/jobs/start", json={"job_id": "Demo/Later", "at": at})
        assert later.status_code == 202, later.text
        later_run = later.json()
        assert later_run["status"] == "scheduled"
        failed = eventually(
            lambda: client.get(f"/api/v1/jobs/status/{first['id']}").json(),
            lambda run: run["next_attempt"] is not None,
        )
        assert (failed["status"], failed["exit_code"]) == ("failed", 75)
        pending = client.get("/api/v1/jobs/scheduled").json()["executions"]
        assert {run["id"] for run in pending} == {failed["next_attempt"], later_run["id"]}

    with serve(tmp_path, port) as client:
        pending = client.get("/api/v1/jobs/scheduled").json()["executions"]
        assert {run["id"] for run in pending} <= {failed["next_attempt"], later_run["id"]}
        retried = eventually(
            lambda: client.get(f"/api/v1/jobs/status/{failed['next_attempt']}").json(),
            lambda run: run["status"] in ("succeeded", "failed", "rejected", "stopped"),
        )
        ran_later = eventually(
            lambda: client.get(f"/api/v1/jobs/status/{later_run['id']}").json(),
            lambda run: run["status"] in ("succeeded", "failed", "rejected", "stopped"),
        )
    assert (retried["status"], retried["attempt"], retried["retry_of"]) == (
        "succeeded",
        2,
        first["id"],
    )
    assert retried["trigger"] == "retry"
    # Started by the second server: it took the due rows over from the first.
    assert retried["owner"] != first["owner"]
    assert ran_later["owner"] != first["owner"]
    assert ran_later["status"] == "succeeded"
    started = datetime.fromisoformat(ran_later["started_at"])
    assert started >= datetime.fromisoformat(at)

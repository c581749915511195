"""``jobhost plan``, ``start --dry-run`` and ``hook create|rotate|show`` against a real
``jobhost serve`` process, both as subprocesses."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.jobfolders import write_job
from tests.test_cli_local import cli_env, jobhost_argv
from tests.test_cli_remote import ADMIN_PASSWORD, Run, Server, free_port, login

pytestmark = pytest.mark.slow

DEPLOY = (
    "import os\n"
    "print('deploy', os.environ['JOBHOST_VAR_Branch'], 'dry', os.environ['JOBHOST_DRY_RUN'])\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("policies")
    apps = root / "apps"
    write_job(
        apps,
        "Web",
        "Deploy",
        {
            "Name": "Deploy",
            "argumentlist": ["--branch", "{{Branch}}"],
            "template_variables": {"Branch": {"description": "branch", "default": "main"}},
            "webhook": {"enabled": True, "signature": "hmac-sha256"},
            "default_schedule": "0 6 * * 1",
            "timezone": "America/New_York",
            "max_concurrent": 0,
        },
        script_text=DEPLOY,
    )
    port = free_port()
    env = cli_env(root, JOBHOST_ADMIN_PASSWORD=ADMIN_PASSWORD, JOBHOST_ACCESS_LOG="true")
    serve = ["serve", "--apps", str(apps), "--data-dir", str(root / "data")]
    proc = subprocess.Popen(
        [*jobhost_argv(), *serve, "--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        proc.wait()
        pytest.fail("jobhost serve exited before listening:\n" + "".join(log))
    drain = threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True)
    drain.start()
    try:
        yield Server(url=f"http://127.0.0.1:{port}", root=root, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def admin(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return login(server, tmp_path_factory.mktemp("admin"), "admin", ADMIN_PASSWORD)


def test_plan_goes_to_the_server(admin: Run) -> None:
    shown = admin("plan", "Web/Deploy", "--var", "Branch=release")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "If started now: start" in shown.stdout
    assert "--branch release" in shown.stdout
    assert "America/New_York" in shown.stdout
    plan = json.loads(admin("plan", "Web/Deploy", "--json").stdout)
    assert len(plan["schedule"]["next"]) == 5
    assert plan["schedule"]["next"][0]["local"].endswith(("-05:00", "-04:00"))


def test_start_dry_run_follows_a_dry_run(admin: Run) -> None:
    ran = admin("start", "Web/Deploy", "--dry-run", "--follow")
    assert ran.returncode == 0, ran.stderr
    assert "deploy main dry 1" in ran.stdout
    started = json.loads(admin("start", "Web/Deploy", "--dry-run", "--json").stdout)
    assert started["dry_run"] is True


def test_hook_create_show_rotate_and_a_signed_call(admin: Run, server: Server) -> None:
    made = admin("hook", "create", "Web/Deploy", "--json")
    assert made.returncode == 0, made.stderr
    hook = json.loads(made.stdout)
    assert hook["url"].startswith(f"{server.url}/api/v1/hooks/jhh_")
    again = admin("hook", "create", "Web/Deploy")
    assert again.returncode == 6  # Conflict
    assert "jobhost hook rotate Web/Deploy" in again.stderr
    shown = admin("hook", "show", "Web/Deploy")
    assert "webhook by admin" in shown.stdout
    assert "signed (hmac-sha256)" in shown.stdout
    assert hook["token"] not in shown.stdout
    rotated = admin("hook", "rotate", "Web/Deploy")
    assert rotated.returncode == 0, rotated.stderr
    assert "Signing secret: jhs_" in rotated.stdout
    url = next(line.split("URL: ")[1] for line in rotated.stdout.splitlines() if "URL: " in line)
    secret = next(
        line.split("Signing secret: ")[1]
        for line in rotated.stdout.splitlines()
        if "Signing secret: " in line
    )
    from jobhost.hooks import sign

    body = b'{"Branch": "hotfix"}'
    answer = httpx.post(
        url, content=body, headers={"X-Hub-Signature-256": sign(secret, body)}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["trigger"] == "webhook"
    old = httpx.post(hook["url"], content=body, timeout=30)
    assert old.status_code == 404
    # The access log (on here) shows the calls, never the URLs' tokens.
    deadline = time.monotonic() + 60
    while sum("/api/v1/hooks/*** HTTP" in line for line in server.log) < 2:
        assert time.monotonic() < deadline, "".join(server.log)
        time.sleep(0.1)  # another process's log: no event to await
    logged = "".join(server.log)
    assert hook["token"] not in logged
    assert url.rsplit("/", 1)[1] not in logged


def test_hook_needs_a_server(tmp_path: Path) -> None:
    local = subprocess.run(
        [*jobhost_argv(), "hook", "show", "Web/Deploy"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert local.returncode != 0
    assert "No JobHost server configured" in local.stderr

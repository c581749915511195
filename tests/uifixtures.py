"""Browser-test fixtures: a real ``jobhost serve`` process and Debian's Chromium.

Import them explicitly where used::

    from tests.uifixtures import browser, server  # noqa: F401

- ``server`` (module scope): ``jobhost serve`` on a free port with a temporary data
  dir, ``JOBHOST_ADMIN_PASSWORD`` set, and an apps root holding a copy of the
  repository's ``apps/`` plus ``XssApp/Payload``, a job whose Name, Description and
  output carry HTML/script payloads and ANSI colours, ``UiTests/Flood`` (prints
  ``FLOOD_LINES`` numbered lines and exits), ``UiTests/Long`` (``LONG_LINES`` of them,
  about 3 MB) and ``UiTests/Sleeper`` (prints one line,
  then sleeps until stopped), ``UiTests/Single`` (the same, at most one run at a time,
  further starts rejected) and ``UiTests/Fails`` (prints ``FAILS_STDERR`` on stderr and
  exits 3; its zone is ``FAILS_ZONE``; its description names a variable with a default
  and one without) and
  ``UiTests/Refused`` (its init script refuses every start with ``REFUSED_REASON``).
  Terminated at the end.
- ``browser`` (module scope): headless Chromium from the system (never downloaded);
  skipped when it is not installed, except when ``CI`` is set, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import require_service

REPO = Path(__file__).resolve().parent.parent
# The README's screenshots are refreshed only on request (JOBHOST_SCREENSHOTS=docs/screenshots
# make test); otherwise they go to a temporary folder, so a test run leaves the tree clean.
SCREENSHOTS = Path(os.environ.get("JOBHOST_SCREENSHOTS") or tempfile.mkdtemp(prefix="jh-shots-"))
ADMIN_PASSWORD = "admin-password-for-ui-tests"
STARTUP_SECONDS = 30.0

XSS_NAME = '<img src=x onerror="alert(1)">Payload'
XSS_DESCRIPTION = "<script>alert(2)</script> & <b>not bold</b>"
XSS_OUTPUT = "<script>alert(1)</script>"
PAYLOAD_SCRIPT = """\
import sys

print("<script>alert(1)</script>")
print('<img src=x onerror="alert(3)">')
print("\\x1b[31mred text\\x1b[0m and \\x1b[1;32mbold green\\x1b[0m")
sys.stdout.flush()
"""
FLOOD_LINES = 50_000
FLOOD_SCRIPT = f"""\
import sys

sys.stdout.write("".join(f"line {{n}}\\n" for n in range(1, {FLOOD_LINES} + 1)))
sys.stdout.flush()
"""
LONG_LINES = 250_000  # about 3 MB: past the 2 MiB a reopened run shows from its tail
LONG_SCRIPT = f"""\
import sys

sys.stdout.write("".join(f"line {{n}}\\n" for n in range(1, {LONG_LINES} + 1)))
sys.stdout.flush()
"""
SLEEPER_READY = "sleeper is waiting"
SLEEPER_SCRIPT = f"""\
import sys
import time

print({SLEEPER_READY!r})
sys.stdout.flush()
time.sleep(600)
"""

FAILS_STDERR = "disk /srv is full"
FAILS_ZONE = "Asia/Tokyo"  # UiTests/Fails's own time zone
REFUSED_REASON = "the backup target is not mounted"
FAILS_SCRIPT = f"""\
import sys

print("checking the disk")
print({FAILS_STDERR!r}, file=sys.stderr)
sys.exit(3)
"""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    """A running ``jobhost serve``: where it listens and how to act as admin."""

    base_url: str
    data_dir: Path
    apps_root: Path
    process: subprocess.Popen[bytes]
    admin_password: str = ADMIN_PASSWORD

    def admin_client(self) -> httpx.Client:
        """An httpx client signed in as admin (session cookie + CSRF header)."""
        client = httpx.Client(base_url=self.base_url, timeout=10)
        response = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": self.admin_password}
        )
        response.raise_for_status()
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return client

    def create_user(self, username: str, password: str, roles: list[str]) -> dict[str, Any]:
        client = self.admin_client()
        try:
            response = client.post(
                "/api/v1/users", json={"username": username, "password": password, "roles": roles}
            )
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body
        finally:
            client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _add_job(apps: Path, job_id: str, script: str, **definition: Any) -> None:
    job = apps / job_id.replace("/", "/jobs/", 1)
    job.mkdir(parents=True)
    (job / "job.py").write_text(script, encoding="utf-8")
    full = {"ScriptRelativePath": "job.py", "roles_start": [], "max_concurrent": 0, **definition}
    (job / "job.json").write_text(json.dumps(full, indent=2), encoding="utf-8")


def _make_apps(root: Path) -> Path:
    apps = root / "apps"
    shutil.copytree(REPO / "apps", apps, ignore=shutil.ignore_patterns("__pycache__", ".state"))
    _add_job(
        apps,
        "XssApp/Payload",
        PAYLOAD_SCRIPT,
        Name=XSS_NAME,
        Description=XSS_DESCRIPTION,
        timeout_seconds=30,
    )
    _add_job(
        apps,
        "UiTests/Flood",
        FLOOD_SCRIPT,
        Name="Flood",
        Description=f"Prints {FLOOD_LINES} numbered lines and exits.",
        timeout_seconds=60,
    )
    _add_job(
        apps,
        "UiTests/Long",
        LONG_SCRIPT,
        Name="Long",
        Description=f"Prints {LONG_LINES} numbered lines (about 3 MB) and exits.",
        timeout_seconds=120,
    )
    _add_job(
        apps,
        "UiTests/Sleeper",
        SLEEPER_SCRIPT,
        Name="Sleeper",
        Description="Prints one line, then waits until stopped.",
        timeout_seconds=900,
    )
    _add_job(
        apps,
        "UiTests/Single",
        SLEEPER_SCRIPT,
        Name="Single",
        Description="Like Sleeper, but one run at a time.",
        timeout_seconds=900,
        max_concurrent=1,
        on_conflict="reject",
    )
    _add_job(
        apps,
        "UiTests/Fails",
        FAILS_SCRIPT,
        Name="Fails",
        Description="Checks {{Disk}} every {{Minutes}} minutes and fails.",
        timeout_seconds=60,
        timezone=FAILS_ZONE,
        template_variables={
            "Disk": {"type": "string", "default": "/srv"},
            "Minutes": {"type": "integer", "required": False},
        },
    )
    _add_job(
        apps,
        "UiTests/Refused",
        'print("never runs")\n',
        Name="Refused",
        Description="Its init script refuses every start.",
        timeout_seconds=60,
    )
    init = apps / "UiTests" / "jobs" / "Refused" / "init-job.py"
    init.write_text(f"import sys\n\nsys.exit({REFUSED_REASON!r})\n", encoding="utf-8")
    return apps


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    # Readiness of another process has no event to await: poll /healthz briefly.
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"jobhost serve exited with code {process.returncode}:\n"
                + log.read_text(errors="replace")
            )
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"jobhost serve did not answer /healthz within {STARTUP_SECONDS:g} s:\n"
        + log.read_text(errors="replace")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-server")
    apps = _make_apps(root)
    data_dir = root / "data"
    port = _free_port()
    env = {
        **os.environ,
        "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "JOBHOST_CONFIG": str(root / "no-jobhost.toml"),  # ignore a developer's jobhost.toml
        "JOBHOST_WATCH": "false",
    }
    jobhost = Path(sys.executable).with_name("jobhost")
    log = root / "server.log"
    argv = [
        str(jobhost),
        *("--apps", str(apps), "--data-dir", str(data_dir)),
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, log)
        yield Server(base_url=base_url, data_dir=data_dir, apps_root=apps, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    require_service(executable is not None, "chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(name="page")
def admin_page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh browser context signed in as admin; fails on any uncaught script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, "admin", server.admin_password)
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def start_through_api(
    page: Page, job_id: str, variables: dict[str, Any], *, test: bool = False
) -> str:
    """Start a run with the page's own session (not through the UI); returns its id."""
    started = page.evaluate(
        """async ([path, jobId, variables]) => {
            const me = await (await fetch("/api/v1/auth/me")).json();
            const response = await fetch(path, {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": me.csrf_token},
                body: JSON.stringify({job_id: jobId, variables}),
            });
            return {status: response.status, body: await response.json()};
        }""",
        ["/api/v1/jobs/test" if test else "/api/v1/jobs/start", job_id, variables],
    )
    assert started["status"] == 202, started
    execution_id: str = started["body"]["id"]
    return execution_id


def sign_in(page: Page, server: Server, username: str, password: str) -> None:
    """Open the app and sign in through the form; returns once the catalog shows."""
    page.goto(f"{server.base_url}/#/catalog")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Job catalog").wait_for()

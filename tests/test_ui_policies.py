"""Run policies in the web UI (real Chromium, real server): attempts grouped in history,
a run's attempts and chain links on its page, queue positions and scheduled runs in
Running."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.jobfolders import write_job
from tests.uifixtures import Server, admin_page  # noqa: F401

pytestmark = pytest.mark.browser

FLAKY = """
import os, sys
path = os.path.join(os.environ["JOBHOST_STATE_DIR"], "count")
count = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(count))
sys.exit(0 if count >= 2 else 75)
"""
SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
WAIT = 60.0


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    """Jobs of this module added to the server's apps, and an admin client."""
    apps = server.apps_root
    write_job(
        apps,
        "UiPolicies",
        "Flaky",
        {
            "Name": "Flaky",
            "retry": {"attempts": 2, "backoff_seconds": 0.1},
            "on_success": [{"job": "UiPolicies/After"}],
        },
        script_text=FLAKY,
    )
    write_job(apps, "UiPolicies", "After", {"Name": "After"}, script_text="print('after')\n")
    write_job(
        apps,
        "UiPolicies",
        "Hold",
        {"Name": "Hold", "on_conflict": "queue", "stop_grace_seconds": 1},
        script_text=SLEEPER,
    )
    client = server.admin_client()
    try:
        assert client.post("/api/v1/jobs/reload").status_code == 200
        yield client
    finally:
        client.close()


def run_of(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/status/{execution_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


def eventually(client: httpx.Client, execution_id: str, key: str) -> dict[str, Any]:
    """The run once ``key`` has a value (a condition, with a generous deadline)."""
    deadline = time.monotonic() + WAIT
    while not (run := run_of(client, execution_id))[key]:
        assert time.monotonic() < deadline, f"{key} never set on {run}"
        time.sleep(0.2)
    return run


def test_attempts_and_chain_links_show_on_the_run_page_and_in_history(
    page: Page, server: Server, admin: httpx.Client
) -> None:
    first = admin.post("/api/v1/jobs/start", json={"job_id": "UiPolicies/Flaky"}).json()
    second_id = eventually(admin, first["id"], "next_attempt")["next_attempt"]
    second = eventually(admin, second_id, "chained")
    after_id = second["chained"][0]

    page.goto(f"{server.base_url}/#/executions/{second_id}")
    links = page.get_by_role("region", name="Attempts and chain")
    expect(links).to_contain_text("Attempt2, retrying the first attempt")
    links.get_by_role("link", name=after_id[:8]).click()
    chained = page.get_by_role("region", name="Attempts and chain")
    expect(chained).to_contain_text("Started by run")
    chained.get_by_role("link", name=second_id[:8]).click()
    expect(page.get_by_role("region", name="Attempts and chain")).to_contain_text("Started")

    page.goto(f"{server.base_url}/#/history")
    rows = page.locator("tbody tr[data-execution-id]")
    expect(rows.first).to_be_visible()
    ids = rows.evaluate_all("rows => rows.map(r => r.dataset.executionId)")
    assert ids.index(second_id) + 1 == ids.index(first["id"])  # grouped, newest attempt first
    retry_row = page.locator(f'tr[data-execution-id="{second_id}"]')
    expect(retry_row).to_have_class("attempt-row")
    expect(retry_row).to_contain_text("attempt 2")


def test_running_shows_queue_positions_and_scheduled_runs(
    page: Page, server: Server, admin: httpx.Client
) -> None:
    started = [
        admin.post("/api/v1/jobs/start", json={"job_id": "UiPolicies/Hold"}).json()
        for _ in range(3)
    ]
    later = admin.post(
        "/api/v1/jobs/start", json={"job_id": "UiPolicies/After", "delay_seconds": 3600}
    ).json()
    try:
        page.goto(f"{server.base_url}/#/running")
        second = page.locator(f'tr[data-execution-id="{started[1]["id"]}"]')
        third = page.locator(f'tr[data-execution-id="{started[2]["id"]}"]')
        expect(second).to_contain_text("queued #1")
        expect(third).to_contain_text("queued #2")
        due = page.locator(f'tr[data-execution-id="{later["id"]}"]')
        expect(due.locator(".status")).to_have_text("scheduled")
        expect(due).to_contain_text("due ")

        admin.post("/api/v1/jobs/stop", json={"execution_id": started[0]["id"]})
        expect(third).to_contain_text("queued #1", timeout=WAIT * 1000)  # moved up, live
    finally:
        for run in (*started, later):
            admin.post("/api/v1/jobs/stop", json={"execution_id": run["id"]})


def test_the_start_dialog_schedules_a_run_for_a_later_time(
    page: Page, server: Server, admin: httpx.Client
) -> None:
    page.goto(f"{server.base_url}/#/catalog")
    page.get_by_role("button", name="Start After").click()
    dialog = page.get_by_role("dialog", name="Start: After")
    # Tomorrow at this minute, as the browser's own local time (what a person types).
    tomorrow = page.evaluate(
        """(() => {
            const d = new Date(Date.now() + 86400000);
            const p = (n) => String(n).padStart(2, "0");
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`
                + `T${p(d.getHours())}:${p(d.getMinutes())}:00`;
        })()"""
    )
    dialog.get_by_label("Start at").fill(tomorrow)
    dialog.get_by_role("button", name="Start", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f]+$"))
    execution_id = page.url.rsplit("/", 1)[1]
    try:
        run = run_of(admin, execution_id)
        assert run["status"] == "scheduled"
        # That local time as an instant, as the browser's zone reads it.
        local = page.evaluate(f"new Date({tomorrow!r}).toISOString()")
        assert run["due_at"].replace("+00:00", "Z").startswith(local[:19])
        expect(page.locator("main")).to_contain_text("scheduled")
    finally:
        admin.post("/api/v1/jobs/stop", json={"execution_id": execution_id})
    assert run_of(admin, execution_id)["status"] != "scheduled"  # a stop cancels it

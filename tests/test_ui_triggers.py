"""Run policies in a real Chromium against a real ``jobhost serve``: choices a script
lists as a select, the dry-run box, the plan, and a job's webhook made and called."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.uifixtures import Server, admin_page  # noqa: F401

pytestmark = pytest.mark.browser

DEPLOY = (
    "import os\n"
    "print('site', os.environ['JOBHOST_VAR_Site'], 'dry', os.environ['JOBHOST_DRY_RUN'])\n"
)
LIST_SITES = "import json\nprint(json.dumps(['north', 'south']))\n"


@pytest.fixture(scope="module")
def policy_jobs(server: Server) -> str:
    """``Policies/Deploy``: a Site listed by a script, a webhook; loaded by a reload."""
    folder: Path = server.apps_root / "Policies" / "jobs" / "Deploy"
    folder.mkdir(parents=True)
    (folder / "deploy.py").write_text(DEPLOY, encoding="utf-8")
    (folder / "list-sites.py").write_text(LIST_SITES, encoding="utf-8")
    definition = {
        "Name": "Deploy",
        "Description": "Deploys a site.",
        "ScriptRelativePath": "deploy.py",
        "argumentlist": ["--site", "{{Site}}"],
        "template_variables": {
            "Site": {"description": "which site", "choices_from": {"script": "list-sites.py"}}
        },
        "webhook": {"enabled": True},
        "max_concurrent": 0,
    }
    (folder / "job.json").write_text(json.dumps(definition), encoding="utf-8")
    client = server.admin_client()
    try:
        client.post("/api/v1/jobs/reload").raise_for_status()
    finally:
        client.close()
    return "Policies/Deploy"


def test_listed_choices_are_a_select_and_a_dry_run_is_shown_as_one(
    policy_jobs: str, page: Page
) -> None:
    page.get_by_role("button", name="Start Deploy").click()
    dialog = page.get_by_role("dialog", name="Start: Deploy")
    site = dialog.get_by_label("Site")
    expect(site.locator("option")).to_have_text(["north", "south"])
    site.select_option("south")
    dialog.get_by_label("Dry run").check()
    dialog.get_by_role("button", name="Start", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f]+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("(dry run)")
    expect(page.get_by_role("log", name="Output")).to_contain_text("site south dry 1")


def test_the_plan_shows_the_command_and_the_verdict_before_starting(
    policy_jobs: str, page: Page
) -> None:
    page.get_by_role("button", name="Start Deploy").click()
    dialog = page.get_by_role("dialog", name="Start: Deploy")
    dialog.get_by_label("Site").select_option("north")
    dialog.get_by_role("button", name="Show plan").click()
    plan = page.get_by_role("dialog", name="Plan: Deploy")
    expect(plan).to_contain_text("If started now: Starts at once")
    expect(plan.get_by_role("region", name="Command")).to_contain_text("--site north")
    expect(plan.get_by_role("region", name="Environment")).to_contain_text("JOBHOST_VAR_Site")


def test_a_webhook_is_made_on_the_job_card_and_its_url_starts_the_job(
    policy_jobs: str, page: Page, server: Server
) -> None:
    page.get_by_role("button", name="Webhook of Deploy").click()
    dialog = page.get_by_role("dialog", name="Webhook: Deploy")
    expect(dialog).to_contain_text("No webhook yet.")
    dialog.get_by_role("button", name="Create webhook").click()
    url = dialog.locator(".hook-url")
    expect(url).to_contain_text("/api/v1/hooks/jhh_")
    expect(dialog).to_contain_text("Made by admin")
    answer = httpx.post(url.inner_text(), content=b'{"Site": "north"}', timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["trigger"] == "webhook"

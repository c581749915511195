"""The web UI as a status board, in a real Chromium against a real ``jobhost serve``:
views that are left stay left, re-runs say what they do, the catalog shows what failed,
what runs and what is next, and the run page puts the output first."""

from __future__ import annotations

import re
from contextlib import closing

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.uifixtures import (
    FAILS_STDERR,
    REFUSED_REASON,
    SCREENSHOTS,
    SLEEPER_READY,
    Server,
    admin_page,  # noqa: F401
    sign_in,
    start_through_api,
)

pytestmark = pytest.mark.browser

RUN_SECONDS = 60_000  # ms: how long a test waits for a short run to end on a busy machine

# Every fetch waits 250 ms (what a VPN adds) and is counted until its body was read and
# the code awaiting it had its turn: the decrement runs in a later task than the
# microtasks that continue after the body, so a follow-up fetch is counted first.
SLOW_LINK = """
(() => {
  const realFetch = window.fetch.bind(window);
  window.__pending = 0;
  window.__fetches = 0;
  const settle = () => setTimeout(() => { window.__pending -= 1; }, 0);
  window.fetch = async (...args) => {
    window.__pending += 1;
    window.__fetches += 1;
    await new Promise((resolve) => setTimeout(resolve, 250));
    let response;
    try {
      response = await realFetch(...args);
    } catch (err) {
      settle();
      throw err;
    }
    let settled = false;
    const once = () => {
      if (!settled) {
        settled = true;
        settle();
      }
    };
    if (response.status === 204) once();
    for (const name of ["text", "json"]) {
      const read = response[name].bind(response);
      response[name] = () => read().finally(once);
    }
    return response;
  };
  const RealEventSource = window.EventSource;
  window.__sources = [];
  window.EventSource = class extends RealEventSource {
    constructor(url, init) {
      super(url, init);
      window.__sources.push(this);
    }
  };
})();
"""


def _finished(server: Server, execution_id: str) -> dict[str, object]:
    with closing(server.admin_client()) as client:
        response = client.get(f"/api/v1/jobs/status/{execution_id}")
        response.raise_for_status()
        body: dict[str, object] = response.json()
        return body


def _wait_ended(page: Page, server: Server, execution_id: str) -> None:
    page.goto(f"{server.base_url}/#/executions/{execution_id}")
    expect(page.get_by_role("region", name="Summary").locator(".status")).not_to_have_text(
        re.compile("^(queued|starting|running|stopping)$"), timeout=RUN_SECONDS
    )


def test_leaving_a_run_page_before_its_data_arrives_leaves_nothing_behind(
    browser: Browser, server: Server
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(SLOW_LINK)
    page = context.new_page()
    sign_in(page, server, "admin", server.admin_password)
    execution_id = start_through_api(page, "UiTests/Sleeper", {})

    page.evaluate(f"location.hash = '#/executions/{execution_id}'")
    page.evaluate("location.hash = '#/running'")
    expect(page.get_by_role("heading", name="Running")).to_be_visible()
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row.locator(".status")).to_have_text("running", timeout=30_000)
    page.wait_for_function("() => window.__pending === 0")

    main = page.locator("main")
    for region in ("Variables", "Result", "Output", "Summary"):
        expect(main.get_by_role("region", name=region)).to_have_count(0)
    open_streams = page.evaluate(
        "window.__sources.filter((s) => s.readyState !== EventSource.CLOSED).map((s) => s.url)"
    )
    assert [url for url in open_streams if "/output/" in url] == [], open_streams
    assert len(open_streams) <= 1, f"streams left open: {open_streams}"

    row.get_by_role("button", name="Stop UiTests/Sleeper").click()
    expect(row.locator(".status")).to_have_text("stopped", timeout=30_000)
    context.close()


def test_restarting_a_test_run_says_it_stays_a_test_run(page: Page, server: Server) -> None:
    execution_id = start_through_api(page, "Demo/Hello", {"Name": "Tester"}, test=True)
    _wait_ended(page, server, execution_id)
    expect(page.get_by_text("Test run — started with the test flag")).to_be_visible()
    expect(page.get_by_role("button", name="Restart…")).to_have_count(0)

    # A test run's restart is a test run again: nothing real to confirm.
    page.get_by_role("button", name="Restart as a test run").click()
    expect(page).not_to_have_url(re.compile(f"#/executions/{execution_id}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert _finished(server, new_id)["test"] is True
    expect(page.get_by_text("Test run — started with the test flag")).to_be_visible()


def test_restarting_a_real_run_asks_once(page: Page, server: Server) -> None:
    execution_id = start_through_api(page, "Demo/Hello", {"Name": "Real"})
    _wait_ended(page, server, execution_id)
    page.get_by_role("button", name="Restart…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("again for real, with the same variables")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page).to_have_url(re.compile(f"#/executions/{execution_id}$"))

    page.get_by_role("button", name="Restart…").click()
    page.get_by_role("dialog").get_by_role("button", name="Restart").click()
    expect(page).not_to_have_url(re.compile(f"#/executions/{execution_id}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert _finished(server, new_id)["test"] is False


def test_run_again_prefills_the_start_form_with_the_runs_variables(
    page: Page, server: Server
) -> None:
    execution_id = start_through_api(page, "Demo/Hello", {"Name": "Prefilled"})
    _wait_ended(page, server, execution_id)
    page.get_by_role("button", name="Run again…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Name")).to_have_value("Prefilled")
    page.go_back()
    expect(page.get_by_role("heading", name="Job catalog")).to_be_visible()
    expect(dialog).to_be_hidden()  # a dialog does not outlive its page


def test_a_failed_run_shows_its_reason_above_the_fold_with_the_output(
    browser: Browser, server: Server
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    sign_in(page, server, "admin", server.admin_password)
    execution_id = start_through_api(page, "UiTests/Fails", {})
    _wait_ended(page, server, execution_id)

    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text("failed")
    reason = page.get_by_role("region", name="Why it failed")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("exit 3")
    expect(reason).to_contain_text(FAILS_STDERR)  # its last lines, up front
    expect(reason).not_to_contain_text("null")
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text(FAILS_STDERR)
    box = log.bounding_box()
    assert box is not None
    assert box["y"] < 900, f"the output starts below the fold: {box}"
    expect(page.get_by_role("link", name="History", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "failed-run.png"))
    context.close()


def test_catalog_answers_what_failed_what_runs_and_whats_next(page: Page, server: Server) -> None:
    failed_id = start_through_api(page, "UiTests/Fails", {})
    _wait_ended(page, server, failed_id)
    running_id = start_through_api(page, "UiTests/Single", {})
    page.goto(f"{server.base_url}/#/executions/{running_id}")
    expect(page.get_by_role("log", name="Output")).to_contain_text(SLEEPER_READY, timeout=30_000)
    page.get_by_role("link", name="Catalog").click()

    fails = page.locator("article.job").filter(has_text="UiTests/Fails")
    expect(fails.locator(".last-run .status")).to_have_text("failed")
    expect(fails.locator(".strip a.tick-failed").first).to_be_visible()
    # Defaults are filled in; a variable without one is a chip with its name.
    expect(fails.locator(".description")).to_have_text(
        "Checks /srv every Minutes minutes and fails."
    )
    expect(fails.locator(".description .var-chip")).to_have_text("Minutes")
    expect(page.locator(".board-summary")).to_contain_text("failing")

    single = page.locator("article.job").filter(has_text="UiTests/Single")
    expect(single.get_by_role("link", name="Open live run")).to_have_attribute(
        "href", re.compile(running_id)
    )
    expect(single.get_by_role("button", name="Start Single")).to_be_disabled()
    expect(single.locator(".why")).to_contain_text("Already running")
    # An admin may do everything: no permission pills.
    expect(single.locator(".badge-no")).to_have_count(0)

    # Filters live in the URL and survive a reload; the list layout is remembered.
    page.get_by_role("button", name="Failing").click()
    expect(page).to_have_url(re.compile(r"#/catalog\?filter=failing$"))
    expect(fails).to_be_visible()
    expect(single).to_be_hidden()
    page.get_by_role("button", name="Show jobs as a list").click()
    page.reload()
    expect(page.locator("table.board tr.job")).not_to_have_count(0)
    expect(page.locator('table.board tr[data-job-id="UiTests/Single"]')).to_have_count(0)
    page.get_by_role("button", name="Running").click()
    row = page.locator('table.board tr[data-job-id="UiTests/Single"]')
    expect(row.get_by_role("link", name="Open live run")).to_be_visible()
    page.get_by_role("button", name="All", exact=True).click()
    expect(page.locator('table.board tr[data-job-id="UiTests/Fails"]')).to_be_visible()
    page.set_viewport_size({"width": 1400, "height": 900})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "catalog.png"))
    page.get_by_role("button", name="Show jobs as cards").click()

    with closing(server.admin_client()) as client:
        client.post("/api/v1/jobs/stop", json={"execution_id": running_id}).raise_for_status()


def test_a_start_refused_as_already_running_offers_the_run_and_a_restart(
    page: Page, server: Server
) -> None:
    page.get_by_role("button", name="Start Single").click()
    dialog = page.get_by_role("dialog")
    running_id = start_through_api(page, "UiTests/Single", {})
    dialog.get_by_role("button", name="Start", exact=True).click()
    conflict = dialog.locator(".conflict")
    expect(conflict).to_contain_text(re.compile(r"Already running since \d"))
    expect(conflict.get_by_role("link", name="Open run")).to_have_attribute(
        "href", re.compile(running_id)
    )
    conflict.get_by_role("button", name="Restart it").click()
    expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f]+$"))
    restarted = page.url.rsplit("/", 1)[1]
    assert restarted != running_id
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text(
        "stopped", timeout=30_000
    )


def test_a_viewer_opening_admin_reads_that_it_needs_admin_rights(
    browser: Browser, server: Server
) -> None:
    with closing(server.admin_client()) as client:
        known = client.get("/api/v1/users").json()
    if not any(u["username"] == "plainviewer" for u in known.get("users", known)):
        server.create_user("plainviewer", "viewer-password", ["viewer"])
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, "plainviewer", "viewer-password")
    page.goto(f"{server.base_url}/#/admin")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    expect(page.get_by_role("alert")).to_contain_text("You need admin rights")
    context.close()


def test_the_catalog_api_and_cli_fields_carry_the_status(server: Server) -> None:
    with closing(server.admin_client()) as client:
        jobs = {j["id"]: j for j in client.get("/api/v1/jobs/catalog").json()["jobs"]}
    fails = jobs["UiTests/Fails"]
    if fails["last_run"] is None:
        with closing(server.admin_client()) as client:
            started = client.post("/api/v1/jobs/start", json={"job_id": "UiTests/Fails"})
            started.raise_for_status()
            execution_id = started.json()["id"]
            with client.stream(
                "GET", f"/api/v1/jobs/output/{execution_id}/stream", timeout=60
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: end"):
                        break
            fails = client.get("/api/v1/jobs/catalog/UiTests/Fails").json()
    assert fails["last_run"]["status"] == "failed"
    assert fails["outcomes"][0]["id"] == fails["last_run"]["id"]
    assert fails["active"] == []
    assert "next_fire" in fails


def test_a_refused_scheduled_fire_shows_in_history_on_the_card_and_in_schedules(
    page: Page, server: Server
) -> None:
    path = "/api/v1/jobs/schedules/UiTests/Refused"
    page.evaluate(
        """() => {
            window.__rejected = new Promise((resolve) => {
                const events = new EventSource("/api/v1/jobs/events");
                events.addEventListener("execution", (event) => {
                    const e = JSON.parse(event.data);
                    if (e.job_id === "UiTests/Refused" && e.status === "rejected") {
                        events.close();
                        resolve(e.id);
                    }
                });
                events.addEventListener("open", () => { window.__listening = true; });
            });
        }"""
    )
    page.wait_for_function("() => window.__listening === true")
    with closing(server.admin_client()) as client:
        client.put(path, json={"schedule": "* * * * * *", "enabled": True}).raise_for_status()
    try:
        rejected_id = page.evaluate("() => window.__rejected")
    finally:
        with closing(server.admin_client()) as client:
            client.put(path, json={"enabled": False}).raise_for_status()
    page.goto(f"{server.base_url}/#/history?job_id=UiTests%2FRefused&status=rejected")
    row = page.locator(f'tr[data-execution-id="{rejected_id}"]')
    expect(row.locator(".status")).to_have_text("rejected")
    expect(row.locator(".reason")).to_contain_text(REFUSED_REASON)

    page.goto(f"{server.base_url}/#/catalog")
    card = page.locator("article.job").filter(has_text="UiTests/Refused")
    expect(card.get_by_text("⚠ schedule failing")).to_be_visible()
    expect(card.locator(".last-run .reason")).to_contain_text(REFUSED_REASON)

    page.get_by_role("link", name="Schedules").click()
    schedule = page.locator('tr[data-job-id="UiTests/Refused"]')
    expect(schedule.locator(".last-fire .status")).to_have_text("rejected")
    expect(schedule.locator(".last-fire .reason")).to_contain_text(REFUSED_REASON)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "schedules.png"))
    schedule.get_by_role("link", name="Open run").click()
    expect(page.get_by_role("region", name="Why it was rejected")).to_contain_text(REFUSED_REASON)


def test_ui_files_are_compressed_and_cached_under_a_versioned_prefix(server: Server) -> None:
    index = httpx.get(f"{server.base_url}/", headers={"Accept-Encoding": "gzip"})
    assert index.headers["cache-control"] == "no-cache"
    found = re.search(r'src="(v/[0-9a-f]{12}/app\.js)"', index.text)
    assert found, index.text
    app_js = httpx.get(f"{server.base_url}/{found.group(1)}", headers={"Accept-Encoding": "gzip"})
    assert app_js.headers["content-encoding"] == "gzip"
    assert "immutable" in app_js.headers["cache-control"]
    assert "import(" in app_js.text
    again = httpx.get(
        f"{server.base_url}/{found.group(1)}", headers={"If-None-Match": app_js.headers["etag"]}
    )
    assert again.status_code == 304
    unversioned = httpx.get(f"{server.base_url}/app.js")
    assert unversioned.headers["cache-control"] == "no-cache"
    assert unversioned.text == app_js.text
    assert httpx.get(f"{server.base_url}/v/{'0' * 12}/../../pyproject.toml").status_code == 404


def test_a_viewers_first_view_is_small_and_never_loads_the_admin_code(
    browser: Browser, server: Server
) -> None:
    with closing(server.admin_client()) as client:
        names = {u["username"] for u in client.get("/api/v1/users").json()["users"]}
    if "smallviewer" not in names:
        server.create_user("smallviewer", "viewer-password", ["viewer"])
    context = browser.new_context()
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    sign_in(page, server, "smallviewer", "viewer-password")
    page.locator("article.job").first.wait_for()
    page.wait_for_load_state("load")
    # transferSize counts headers and compressed bodies; the EventSource stays open and
    # has no entry until it ends, which is right: it carries no page weight.
    sizes = page.evaluate(
        """() => performance.getEntriesByType("resource").concat(
            performance.getEntriesByType("navigation"))
            .reduce((sum, e) => sum + (e.transferSize || 0), 0)"""
    )
    transferred = int(sizes)
    assert transferred <= 120 * 1024, f"first view transferred {transferred} bytes"
    assert not [u for u in urls if "admin.js" in u], urls
    context.close()


def test_times_name_their_zone_and_switch_to_utc_and_history_gives_the_success_rate(
    browser: Browser, server: Server
) -> None:
    context = browser.new_context(timezone_id="America/New_York")
    page = context.new_page()
    sign_in(page, server, "admin", server.admin_password)
    failed_id = start_through_api(page, "UiTests/Fails", {})
    _wait_ended(page, server, failed_id)
    page.goto(f"{server.base_url}/#/history?job_id=UiTests%2FFails")
    expect(page.locator(".job-stats")).to_contain_text("0% succeeded")
    expect(page.locator(".job-stats")).to_contain_text("p95")
    when = page.locator(f'tr[data-execution-id="{failed_id}"] td a').first
    expect(when).to_contain_text(re.compile(r"EST|EDT|GMT-"))

    toggle = page.get_by_role("button", name="Switch time zone")
    expect(toggle).to_have_text("Times in America/New_York")
    toggle.click()
    expect(toggle).to_have_text("Times in UTC")
    expect(page.locator(f'tr[data-execution-id="{failed_id}"] td a').first).to_contain_text("UTC")
    page.reload()
    expect(page.get_by_role("button", name="Switch time zone")).to_have_text("Times in UTC")
    context.close()

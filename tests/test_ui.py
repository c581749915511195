"""The task-manager web UI in a real Chromium against a real ``jobhost serve``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.uifixtures import (
    FLOOD_LINES,
    REPO,
    SCREENSHOTS,
    XSS_DESCRIPTION,
    XSS_NAME,
    XSS_OUTPUT,
    Server,
    admin_page,  # noqa: F401
    sign_in,
    start_through_api,
)

pytestmark = pytest.mark.browser

METRICS_NAME = "System Metrics Collection"
INIT_MESSAGE = "Interval must be between 5 and 3600 seconds, got 4"


def test_sign_in_shows_the_catalog_grouped_by_app_and_filters_as_you_type(page: Page) -> None:
    expect(page.get_by_role("heading", name="WebHostMetrics", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Demo", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name=METRICS_NAME)).to_be_visible()
    expect(page.locator("#whoami")).to_have_text("admin (admin)")

    page.get_by_label("Search jobs").fill("greets")
    expect(page.get_by_role("heading", name="Hello", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name=METRICS_NAME)).to_be_hidden()
    page.get_by_label("Search jobs").fill("")
    expect(page.get_by_role("heading", name=METRICS_NAME)).to_be_visible()


def test_wrong_password_is_refused_with_the_servers_message(
    browser: Browser,
    server: Server,
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base_url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Invalid username or password")).to_be_visible()
    context.close()


def test_metrics_run_streams_output_live_then_stops_and_shows_in_history(page: Page) -> None:
    page.get_by_role("button", name=f"Start {METRICS_NAME}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Interval")).to_have_value("30")
    dialog.get_by_label("Interval").fill("10")
    dialog.get_by_role("button", name="Start", exact=True).click()

    expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f]+$"))
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text("Sampling every 10 s")
    expect(log).to_contain_text('"cpu_percent"')
    expect(page.get_by_role("region", name="Variables")).to_contain_text("Interval10")
    expect(page.locator(".chart .uplot")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "execution.png"), full_page=True)

    execution_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text(
        "stopped", timeout=30_000
    )
    expect(log).to_contain_text("Stopped after")

    page.goto(page.url.split("#")[0] + "#/history")
    page.get_by_label("Job", exact=True).select_option("WebHostMetrics/CollectMetrics")
    page.get_by_role("button", name="Apply filters").click()
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row).to_contain_text("stopped")
    expect(page.get_by_role("heading", name=re.compile("Duration and outcome"))).to_be_visible()


def test_init_script_rejection_appears_next_to_the_field_and_at_the_top(page: Page) -> None:
    page.get_by_role("button", name=f"Start {METRICS_NAME}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Interval").fill("4")
    dialog.get_by_role("button", name="Start", exact=True).click()

    expect(dialog.locator(".form-status")).to_contain_text(INIT_MESSAGE)
    field = dialog.locator(".field").filter(has=page.get_by_label("Interval"))
    expect(field.locator(".field-error")).to_have_text(INIT_MESSAGE)
    expect(dialog.get_by_label("Interval")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"#/catalog$"))


def test_client_side_checks_mirror_the_server_for_jobs_without_an_init_script(
    page: Page,
) -> None:
    page.get_by_role("button", name="Start Hello").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("R2-D2")
    dialog.get_by_role("button", name="Start", exact=True).click()
    error = dialog.locator(".field").filter(has=page.get_by_label("Name")).locator(".field-error")
    expect(error).to_have_text("Name must match the pattern '[A-Za-z ]{1,40}', got 'R2-D2'")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_viewer_sees_no_enabled_start_and_a_forged_start_is_refused(
    browser: Browser,
    server: Server,
) -> None:
    server.create_user("viewer", "viewer-password", ["viewer"])
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, "viewer", "viewer-password")

    card = page.locator("article.job").filter(has_text="WebHostMetrics/CollectMetrics")
    expect(card.get_by_role("button", name=f"Start {METRICS_NAME}")).to_be_disabled()
    expect(card.locator(".why")).to_contain_text("You may not start this job")
    expect(card.locator(".badge-no").first).to_have_text("✗ start")
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()

    forged = page.evaluate(
        """async () => {
            const me = await (await fetch("/api/v1/auth/me")).json();
            const response = await fetch("/api/v1/jobs/start", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": me.csrf_token},
                body: JSON.stringify({job_id: "WebHostMetrics/CollectMetrics",
                                      variables: {Interval: 10}}),
            });
            return {status: response.status, body: await response.json()};
        }"""
    )
    assert forged["status"] == 403
    assert forged["body"]["error"]["code"] == "forbidden"
    context.close()


def test_html_in_job_text_and_output_renders_as_inert_text(page: Page) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.reload()
    expect(page.get_by_role("heading", name=XSS_NAME)).to_be_visible()
    card = page.locator("article.job").filter(has_text="XssApp/Payload")
    expect(card.locator(".description")).to_have_text(XSS_DESCRIPTION)
    assert page.locator("main img").count() == 0

    card.get_by_role("button", name=f"Start {XSS_NAME}").click()
    page.get_by_role("dialog").get_by_role("button", name="Start", exact=True).click()
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text(XSS_OUTPUT)
    expect(log).to_contain_text('<img src=x onerror="alert(3)">')
    expect(log.locator("span.ansi-fg-1")).to_have_text("red text")
    expect(log.locator("span.ansi-bold.ansi-fg-2")).to_have_text("bold green")
    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text("succeeded")
    assert page.locator("main img, main script").count() == 0
    assert dialogs == []


def test_keyboard_reaches_search_and_start_and_escape_closes_the_dialog(page: Page) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")
    focused_search = False
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "catalog-search":
            focused_search = True
            break
    assert focused_search, "Tab never reached the search box"

    for _ in range(30):
        page.keyboard.press("Tab")
        label = page.evaluate("document.activeElement.getAttribute('aria-label') || ''")
        if label.startswith("Start "):
            break
    start_label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert start_label.startswith("Start "), "Tab never reached a Start button"

    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    assert page.evaluate("document.querySelector('dialog').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == start_label


def test_expired_session_returns_to_the_same_page_after_signing_in(
    page: Page,
    server: Server,
) -> None:
    page.goto(f"{server.base_url}/#/history")
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    page.context.clear_cookies()
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("Your session expired — sign in again")).to_be_visible()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(server.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()


def test_first_view_transfers_under_200_kb(browser: Browser, server: Server) -> None:
    context = browser.new_context()
    page = context.new_page()
    sizes: list[int] = []
    page.on("response", lambda response: sizes.append(len(response.body())))
    page.goto(f"{server.base_url}/")
    expect(page.get_by_role("heading", name="Sign in to JobHost")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert sum(sizes) < 200 * 1024, f"first view transferred {sum(sizes)} bytes"
    assert Path(REPO / "jobhost" / "ui" / "vendor" / "uPlot.LICENSE").exists()
    context.close()


def test_admin_creates_a_user_and_a_token_shown_once(page: Page) -> None:
    page.get_by_role("link", name="Admin").click()
    users = page.get_by_role("region", name="Users")
    expect(users.locator('tr[data-username="admin"]')).to_be_visible()
    users.get_by_label("Username").fill("operator1")
    users.get_by_label("Password").fill("short")
    users.get_by_role("button", name="Create user").click()
    expect(users.get_by_text("Passwords must be at least 8 characters long.")).to_be_visible()
    users.get_by_label("Password").fill("operator-password")
    users.get_by_role("textbox", name="Roles").fill("operator, viewer")
    users.get_by_role("button", name="Create user").click()
    expect(users.locator('tr[data-username="operator1"]')).to_contain_text("operator, viewer")
    expect(page.get_by_text("User operator1 created.")).to_be_visible()
    # The audit log shows the action without a reload.
    expect(page.get_by_role("region", name="Audit log")).to_contain_text("user.create")
    users.get_by_label("Username").fill("operator1")
    users.get_by_label("Password").fill("operator-password")
    users.get_by_role("button", name="Create user").click()
    expect(page.get_by_text("A user 'operator1' already exists.")).to_be_visible()

    tokens = page.get_by_role("region", name="API tokens")
    tokens.get_by_label("Token name").fill("ci-token")
    tokens.get_by_role("button", name="Create token").click()
    expect(tokens.get_by_text("Copy this token now: it is shown only once.")).to_be_visible()
    expect(tokens.get_by_label("New token")).to_have_value(re.compile(r"^jh_"))
    expect(tokens.get_by_role("cell", name="ci-token", exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="Audit log")).to_contain_text("user.create")


def test_schedule_editor_previews_fires_and_shows_the_servers_error(page: Page) -> None:
    page.get_by_role("link", name="Running").click()
    expect(page.get_by_role("heading", name="Running")).to_be_visible()
    page.get_by_role("link", name="Schedules").click()
    row = page.locator('tr[data-job-id="Reports/JobReport"]')
    expect(row).to_contain_text("0 7 * * *")
    expect(row.locator("ol.fires").first.locator("li")).to_have_count(3)
    expect(row.get_by_text("2 more")).to_be_visible()

    unscheduled = page.locator('tr[data-job-id="Maintenance/DatabaseBackup"]')
    expect(unscheduled).to_contain_text("not scheduled")
    expect(unscheduled.get_by_role("checkbox")).to_have_count(0)  # not shown as enabled

    row.get_by_role("button", name="Edit the schedule of Reports/JobReport").click()
    dialog = page.get_by_role("dialog")
    expression = dialog.get_by_label("Cron expression")
    expression.fill("* * *")
    field = dialog.locator(".field").filter(has=page.get_by_label("Cron expression"))
    error = field.locator(".field-error")
    expect(error).to_contain_text("'* * *'")
    expect(expression).to_have_attribute("aria-invalid", "true")
    expression.fill("*/15 * * * *")
    expect(error).to_be_hidden()
    expect(dialog.locator(".preview li")).to_have_count(5)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_a_50000_line_output_shows_its_end_keeps_20000_lines_and_stays_usable(
    page: Page,
) -> None:
    card = page.locator("article.job").filter(has_text="UiTests/Flood")
    card.get_by_role("button", name="Start Flood").click()
    page.get_by_role("dialog").get_by_role("button", name="Start", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f]+$"))
    execution_id = page.url.rsplit("/", 1)[1]

    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text(f"line {FLOOD_LINES}\n", timeout=60_000)
    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text(
        "succeeded", timeout=60_000
    )
    # The view follows the end: the last line is scrolled into sight.
    page.wait_for_function(
        """() => {
            const log = document.querySelector("pre.log");
            return log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        }"""
    )
    shown: str = log.evaluate("element => element.textContent")
    assert shown.endswith(f"line {FLOOD_LINES - 1}\nline {FLOOD_LINES}\n")
    # Exactly the last 20,000 lines, each whole.
    assert shown.count("\n") == 20_000, f"{shown.count(chr(10))} lines kept in the page"
    assert shown.startswith(f"line {FLOOD_LINES - 20_000 + 1}\n"), shown[:40]
    # Every line carries its number in the whole log (drawn beside it, never copied).
    numbers = log.locator(".ln")
    expect(numbers.first).to_have_attribute("data-n", str(FLOOD_LINES - 20_000 + 1))
    expect(numbers.last).to_have_attribute("data-n", str(FLOOD_LINES))
    gutter = numbers.last.evaluate("line => getComputedStyle(line, '::before').content")
    assert gutter == f'"{FLOOD_LINES}"', gutter

    # Search what is shown: a count, and next moves to the match.
    page.get_by_label("Search the output").fill("line 49999")
    expect(page.locator(".log-count")).to_have_text("1 of 1")
    page.get_by_label("Search the output").fill("line 3000")
    expect(page.locator(".log-count")).to_have_text("1 of 9")  # 30001 … 30009
    page.get_by_role("button", name="Next match").click()
    expect(page.locator(".log-count")).to_have_text("2 of 9")

    # The full log is readable in the browser, a page at a time from the server.
    page.get_by_role("button", name="Browse full log").click()
    expect(page.get_by_label("Full log page")).to_contain_text("line 1\nline 2\n")

    # Reopened, the finished run keeps the same 20,000 whole lines.
    page.reload()
    expect(log).to_contain_text(f"line {FLOOD_LINES}\n", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('pre.log').textContent.split('\\n').length === 20001"
    )
    reopened: str = log.evaluate("element => element.textContent")
    assert reopened.startswith(f"line {FLOOD_LINES - 20_000 + 1}\n"), reopened[:40]

    notice = page.get_by_text("Earlier output trimmed")
    expect(notice).to_be_visible()
    with page.expect_download() as download_info:
        notice.get_by_role("link", name="download full log").click()
    download = download_info.value
    assert download.suggested_filename == f"execution-{execution_id}.log"
    full = Path(download.path()).read_text(encoding="utf-8")
    assert full.startswith("line 1\nline 2\n")
    assert full.count("\n") == FLOOD_LINES
    assert full.endswith(f"line {FLOOD_LINES}\n")

    page.get_by_role("link", name="History", exact=True).click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator(f'tr[data-execution-id="{execution_id}"]')).to_contain_text("succeeded")


def test_running_view_shows_a_new_run_and_its_stop_without_a_reload(page: Page) -> None:
    page.get_by_role("link", name="Running").click()
    expect(page.get_by_role("heading", name="Running")).to_be_visible()
    # Shown once the list is loaded and the live stream is open; nothing runs yet.
    expect(page.get_by_text("Nothing is running.")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")

    execution_id = start_through_api(page, "UiTests/Sleeper", {})
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row.locator(".status")).to_have_text("running", timeout=30_000)
    expect(row.get_by_role("link", name="UiTests/Sleeper")).to_be_visible()
    expect(page.get_by_text("Nothing is running.")).to_be_hidden()

    row.get_by_role("button", name="Stop UiTests/Sleeper").click()
    expect(row.locator(".status")).to_have_text("stopped", timeout=30_000)
    expect(row.get_by_role("button", name="Stop UiTests/Sleeper")).to_have_count(0)
    assert page.evaluate("window.stillTheSamePage === true"), "the page was reloaded"

    row.get_by_role("link", name="UiTests/Sleeper").click()
    expect(page.get_by_role("region", name="Summary").locator(".status")).to_have_text("stopped")


def _no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate(
        "({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})"
    )
    assert widths["scroll"] <= widths["inner"], f"the page scrolls sideways: {widths}"


def test_200_percent_zoom_reflows_and_the_theme_choice_survives_a_reload(
    browser: Browser,
    server: Server,
) -> None:
    # 200% zoom on a 1280 x 900 window: a 640 x 450 CSS-pixel viewport at 2 device px.
    context = browser.new_context(viewport={"width": 640, "height": 450}, device_scale_factor=2)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, "admin", server.admin_password)

    expect(page.get_by_label("Search jobs")).to_be_visible()
    expect(page.get_by_role("button", name="Start Hello")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    _no_horizontal_overflow(page)

    execution_id = start_through_api(page, "Demo/Hello", {"Name": "Zoom"})
    page.goto(f"{server.base_url}/#/executions/{execution_id}")
    summary = page.get_by_role("region", name="Summary")
    expect(summary.locator(".status")).to_have_text("succeeded", timeout=30_000)
    expect(page.get_by_role("log", name="Output")).to_contain_text("Zoom")
    expect(page.get_by_role("link", name="History of this job")).to_be_visible()
    _no_horizontal_overflow(page)

    html = page.locator("html")
    toggle = page.get_by_role("button", name="Switch colour theme")
    background = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)
    expect(toggle).to_have_text("Dark theme")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(toggle).to_have_text("Light theme")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    dark = page.evaluate(background)
    assert dark != light, f"the background stayed {light} in the dark theme"

    page.reload()
    expect(page.get_by_role("region", name="Summary")).to_be_visible()
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate(background) == dark
    _no_horizontal_overflow(page)

    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    assert page.evaluate(background) == light
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"

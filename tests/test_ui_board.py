"""The status board's details, in a real Chromium against a real ``jobhost serve``: log
line numbers, stderr apart from stdout, who stopped a run, the job's own time zone, the
schedule form, the activity timeline and the phone layout."""

from __future__ import annotations

import itertools
import re
from contextlib import closing

import pytest
from playwright.sync_api import Browser, FloatRect, Locator, Page, Request, expect

from tests.uifixtures import (
    FAILS_STDERR,
    FAILS_ZONE,
    LONG_LINES,
    SCREENSHOTS,
    SLEEPER_READY,
    Server,
    admin_page,  # noqa: F401
    sign_in,
    start_through_api,
)

pytestmark = pytest.mark.browser

RUN_MS = 60_000  # how long a test waits for a short run to end on a busy machine


def _box(locator: Locator) -> FloatRect:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not shown"
    return box


def _ended(page: Page, server: Server, execution_id: str) -> None:
    """Open the run's page and wait until it shows the run ended."""
    page.goto(f"{server.base_url}/#/executions/{execution_id}")
    expect(page.get_by_role("region", name="Summary").locator(".status")).not_to_have_text(
        re.compile("^(queued|starting|running|stopping)$"), timeout=RUN_MS
    )


def test_stderr_stands_apart_from_stdout_with_line_numbers(page: Page, server: Server) -> None:
    execution_id = start_through_api(page, "UiTests/Fails", {})
    _ended(page, server, execution_id)
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text(FAILS_STDERR, timeout=RUN_MS)
    expect(log).to_contain_text("checking the disk")
    lines = log.locator(".ln")
    expect(lines).to_have_count(2)
    error_line = lines.filter(has_text=FAILS_STDERR)
    out_line = lines.filter(has_text="checking the disk")
    expect(error_line).to_have_class(re.compile(r"\bln-err\b"))
    expect(error_line.locator(".stderr")).to_have_text(f"{FAILS_STDERR}\n")
    expect(out_line).not_to_have_class(re.compile(r"\bln-err\b"))
    expect(out_line.locator(".stderr")).to_have_count(0)
    # Distinct to the eye: stderr is drawn in another colour than stdout.
    colour = error_line.locator(".stderr").evaluate("el => getComputedStyle(el).color")
    plain = out_line.evaluate("el => getComputedStyle(el).color")
    assert colour != plain
    assert sorted(lines.evaluate_all("ls => ls.map(l => l.dataset.n)")) == ["1", "2"]
    # The reason box quotes the stderr lines.
    reason = page.get_by_role("region", name="Why it failed")
    expect(reason).to_contain_text("Its last lines on stderr:")
    expect(reason.locator("pre")).to_have_text(FAILS_STDERR)


def test_a_stopped_run_says_who_stopped_it(page: Page, server: Server) -> None:
    execution_id = start_through_api(page, "UiTests/Sleeper", {})
    page.goto(f"{server.base_url}/#/executions/{execution_id}")
    expect(page.get_by_role("log", name="Output")).to_contain_text(SLEEPER_READY, timeout=RUN_MS)
    page.get_by_role("button", name="Stop", exact=True).click()
    summary = page.get_by_role("region", name="Summary")
    expect(summary.locator(".status")).to_have_text("stopped", timeout=RUN_MS)
    expect(summary).to_contain_text("Stopped by")
    expect(summary.locator(".stopped-by")).to_have_text("admin")
    page.goto(f"{server.base_url}/#/history?job_id=UiTests/Sleeper")
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row.locator(".stopped-by")).to_have_text("by admin")


def test_the_time_switch_offers_the_jobs_own_zone(browser: Browser, server: Server) -> None:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="America/New_York", locale="en-US"
    )
    page = context.new_page()
    sign_in(page, server, "admin", server.admin_password)
    execution_id = start_through_api(page, "UiTests/Fails", {})
    _ended(page, server, execution_id)
    page.get_by_text("More about this run").click()
    started = page.locator(".run-details dd").nth(2)
    switch = page.get_by_role("button", name="Switch time zone")
    expect(switch).to_have_text("Times in America/New_York")
    expect(started).to_contain_text(re.compile(r"E[SD]T"))
    switch.click()
    expect(switch).to_have_text("Times in UTC")
    page.get_by_text("More about this run").click()
    expect(started).to_contain_text("UTC")
    switch.click()
    expect(switch).to_have_text("Times in each job's zone")
    page.get_by_text("More about this run").click()
    expect(started).to_contain_text("GMT+9")  # Asia/Tokyo, the job's own zone
    # The catalog knows each job's zone too, and the choice is remembered.
    with closing(server.admin_client()) as client:
        entry = client.get("/api/v1/jobs/catalog/UiTests/Fails").json()
    assert entry["timezone"] == FAILS_ZONE
    page.reload()
    expect(page.get_by_role("button", name="Switch time zone")).to_have_text(
        "Times in each job's zone"
    )
    switch = page.get_by_role("button", name="Switch time zone")
    switch.click()
    expect(switch).to_have_text("Times in America/New_York")
    context.close()


def test_schedule_form_generates_variables_and_marks_the_field_at_fault(
    page: Page, server: Server
) -> None:
    page.get_by_role("link", name="Schedules").click()
    rows = page.locator("tbody tr")
    expect(rows.first).to_be_visible()
    # Unscheduled jobs come last, greyed, and never read as enabled.
    unscheduled = page.locator("tr.unscheduled")
    expect(unscheduled.first).to_contain_text("not scheduled")
    expect(unscheduled.get_by_role("checkbox")).to_have_count(0)
    order = rows.evaluate_all("rs => rs.map(r => r.classList.contains('unscheduled'))")
    assert order == sorted(order), order

    page.get_by_role("button", name="Edit the schedule of Reports/JobReport").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("textarea")).to_have_count(0)  # no raw JSON
    period = dialog.get_by_label("Period")
    expect(period).to_have_value("day")  # the job's choices, as in the start form
    zone = dialog.get_by_label("Time zone")
    cron = dialog.get_by_label("Cron expression")
    zone_field = dialog.locator(".field").filter(has=page.get_by_label("Time zone"))
    cron_field = dialog.locator(".field").filter(has=page.get_by_label("Cron expression"))

    zone.fill("Mars/Olympus")
    expect(zone_field.locator(".field-error")).to_contain_text("Unknown time zone 'Mars/Olympus'")
    expect(zone).to_have_attribute("aria-invalid", "true")
    expect(cron).not_to_have_attribute("aria-invalid", "true")
    expect(cron_field.locator(".field-error")).to_have_text("")
    zone.fill("Europe/Berlin")
    expect(zone).not_to_have_attribute("aria-invalid", "true")

    puts: list[Request] = []
    page.on("request", lambda r: puts.append(r) if r.method == "PUT" else None)
    cron.fill("61 * * * *")
    dialog.get_by_role("button", name="Save").click()
    expect(cron_field.locator(".field-error")).not_to_have_text("")
    expect(cron).to_have_attribute("aria-invalid", "true")
    expect(cron).to_be_focused()
    assert puts == [], "a bad cron was sent"

    cron.fill("30 6 * * *")
    period.select_option("week")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    assert len(puts) == 1
    with closing(server.admin_client()) as client:
        saved = client.get("/api/v1/jobs/schedules/Reports/JobReport").json()
        client.delete("/api/v1/jobs/schedules/Reports/JobReport").raise_for_status()
    assert (saved["schedule"], saved["timezone"]) == ("30 6 * * *", "Europe/Berlin")
    assert saved["variables"] == {"Period": "week"}  # Database kept its default: not stored


def test_history_shows_a_24_hour_activity_timeline(page: Page, server: Server) -> None:
    failed = start_through_api(page, "UiTests/Fails", {})
    _ended(page, server, failed)
    page.get_by_role("link", name="History", exact=True).click()
    timeline = page.get_by_role("region", name="Activity timeline")
    expect(timeline).to_be_visible()
    fails = timeline.locator('li[data-job-id="UiTests/Fails"]')
    run = fails.locator(f'a.tl-run[href="#/executions/{failed}?from=history"]')
    expect(run).to_have_class(re.compile(r"\btl-failed\b"))
    expect(run).to_have_attribute("aria-label", re.compile(r"UiTests/Fails: failed at"))
    # A scheduled job shows its next fires within the next 24 h (JobReport: daily at 7).
    report = timeline.locator('li[data-job-id="Reports/JobReport"]')
    expect(report.locator("a.tl-fire")).to_have_count(1)
    # Past on the left of now, the next fire on its right.
    now = _box(timeline.locator(".tl-now-label"))
    past = _box(run)
    ahead = _box(report.locator("a.tl-fire"))
    assert past["x"] <= now["x"] + now["width"] / 2 <= ahead["x"] + ahead["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "history.png"))
    run.focus()  # runs seconds apart overlap at this scale: the keyboard reaches each
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"#/executions/{failed}"))


def test_on_a_phone_the_key_columns_stay_in_view(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_in(page, server, "admin", server.admin_password)
    header = _box(page.locator("header.topbar"))
    assert header["height"] <= 100, header
    running = start_through_api(page, "UiTests/Sleeper", {})
    page.get_by_role("link", name="Running").click()
    row = page.locator("tbody tr").filter(has_text="UiTests/Sleeper").first
    expect(row).to_be_visible()
    for cell in (
        row.locator(".status"),
        row.locator("td.elapsed"),
        row.get_by_role("button", name="Stop UiTests/Sleeper"),
    ):
        expect(cell).to_be_in_viewport()
        box = _box(cell)
        assert box["x"] + box["width"] <= 390, box
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width} px"
    row.get_by_role("button", name="Stop UiTests/Sleeper").click()
    expect(row.locator(".status")).to_have_text("stopped", timeout=RUN_MS)

    page.get_by_role("link", name="History", exact=True).click()
    # The activity timeline's time labels stay apart on a phone's width.
    expect(page.locator(".tl-now-label")).to_be_visible()
    labels = [_box(label) for label in page.locator(".tl-axis span").all() if label.is_visible()]
    spans = sorted((box["x"], box["x"] + box["width"]) for box in labels)
    assert len(spans) >= 3, spans
    for (_, right), (left, _) in itertools.pairwise(spans):
        assert right <= left, f"time labels overlap on the timeline's axis: {spans}"
    first = page.locator(f'tr[data-execution-id="{running}"]')
    for cell in (first.locator(".status"), first.locator("td.nowrap")):
        expect(cell).to_be_visible()
        box = _box(cell)
        # Starts on screen: a row whose stop reason is long may push the cell's right
        # edge past a phone's width (seen once under load); the page never scrolls sideways.
        assert box["x"] < 390, box
    # Its time takes the short form ("Dec 06" over "11:48 AM"), the full one in its label.
    when = first.locator("a.when")
    assert _box(when)["height"] < 50, f"the run's time takes {_box(when)} on a phone"
    assert "UTC" in (when.get_attribute("aria-label") or "")
    context.close()


def test_a_long_log_opened_at_its_tail_numbers_its_lines_from_there(
    page: Page, server: Server
) -> None:
    execution_id = start_through_api(page, "UiTests/Long", {})
    _ended(page, server, execution_id)
    page.reload()  # reopened finished: only its last 2 MiB are fetched
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text(f"line {LONG_LINES}\n", timeout=RUN_MS)
    expect(log).to_have_class(re.compile(r"\brelative-numbers\b"))
    expect(log).to_have_attribute("title", re.compile(r"^Line numbers \(\+N\) count from"))
    lines = log.locator(".ln")
    expect(lines).to_have_count(20_000)
    first = lines.first.text_content() or ""
    assert re.fullmatch(r"line \d+\n", first), first  # whole, not cut mid-line
    expect(lines.last).to_have_attribute("data-n", re.compile(r"^\d+$"))
    gutter = lines.first.evaluate("line => getComputedStyle(line, '::before').content")
    assert re.fullmatch(r'"\+\d+"', gutter), gutter
    expect(page.get_by_text("Earlier output trimmed")).to_be_visible()

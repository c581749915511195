"""Build an HTML report of the last day's (or week's) executions from JobHost's history.

Per job: runs, failures, success rate, duration p50 and max, the last failure's reason,
and a small inline SVG chart of the run durations (SVG text, no JavaScript). Every
piece of text from the database is HTML-escaped: job IDs, users and error messages are
data, never markup.

The report is written into the job's state dir as ``report-<date>.html`` and listed in
the result's ``attachments``, which the ``notify`` rule (``attach_result``) mails to the
``reports`` channel. ``--test`` writes ``report-<date>-test.html`` and prints its path;
test runs never notify.

Reads the store read-only through ``jobhost.store.SqlStore`` (the job runs with the
host's Python); it never migrates or writes the database.
"""

from __future__ import annotations

import html
import os
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobhost.job import context, progress, set_result
from jobhost.models import Execution, ExecutionStatus, HistoryQuery
from jobhost.store import SqlStore

PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7)}
FAILURES = {ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.LOST}
COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "timed_out": "#ef6c00", "lost": "#6a1b9a"}
CHART_RUNS = 60  # the newest runs drawn per job
CHART_WIDTH, CHART_HEIGHT = 240, 40


@dataclass
class JobStats:
    job_id: str
    runs: list[Execution] = field(default_factory=list)  # oldest first

    @property
    def failures(self) -> int:
        return sum(1 for run in self.runs if run.status in FAILURES)

    @property
    def succeeded(self) -> int:
        return sum(1 for run in self.runs if run.status is ExecutionStatus.SUCCEEDED)

    @property
    def durations(self) -> list[float]:
        return [d for d in (run.duration_seconds for run in self.runs) if d is not None]

    @property
    def last_failure(self) -> Execution | None:
        failed = [run for run in self.runs if run.status in FAILURES]
        return failed[-1] if failed else None


def database_url(value: str) -> str:
    """The variable as a SQLAlchemy URL; empty means the host's own SQLite file."""
    value = value.strip()
    if not value:
        data_dir = os.environ.get("JOBHOST_DATA_DIR", ".data")
        return f"sqlite:///{Path(data_dir).resolve() / 'jobhost.db'}"
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).resolve()}"


def load_history(store: SqlStore, since: datetime) -> list[Execution]:
    """Finished, non-test runs created since ``since``, every page."""
    found: list[Execution] = []
    cursor: str | None = None
    while True:
        page = store.history(HistoryQuery(since=since, limit=1000, cursor=cursor))
        found += [run for run in page.items if run.status.terminal and not run.test]
        cursor = page.next_cursor
        if cursor is None:
            return found


def by_job(runs: list[Execution]) -> list[JobStats]:
    stats: dict[str, JobStats] = {}
    for run in sorted(runs, key=lambda r: r.created_at):
        stats.setdefault(run.job_id, JobStats(run.job_id)).runs.append(run)
    return sorted(stats.values(), key=lambda s: s.job_id)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def chart(stats: JobStats) -> str:
    """Durations of the newest runs as bars, coloured by outcome; SVG text only."""
    runs = [r for r in stats.runs if r.duration_seconds is not None][-CHART_RUNS:]
    if not runs:
        return ""
    longest = max(r.duration_seconds or 0.0 for r in runs) or 1.0
    step = CHART_WIDTH / max(len(runs), 1)
    bars = []
    for i, run in enumerate(runs):
        duration = run.duration_seconds or 0.0
        height = max(1.0, CHART_HEIGHT * duration / longest)
        color = COLORS.get(run.status.value, "#757575")
        title = html.escape(f"{run.id}: {run.status.value}, {seconds(duration)}")
        bars.append(
            f'<rect x="{i * step:.1f}" y="{CHART_HEIGHT - height:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{height:.1f}" fill="{color}">'
            f"<title>{title}</title></rect>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'role="img" aria-label="durations">{"".join(bars)}</svg>'
    )


def row(stats: JobStats) -> str:
    runs = len(stats.runs)
    rate = f"{100 * stats.succeeded / runs:.1f}%" if runs else "-"
    durations = stats.durations
    p50 = statistics.median(durations) if durations else None
    longest = max(durations) if durations else None
    last = stats.last_failure
    reason = "" if last is None else (last.error or f"exit {last.exit_code}")
    cells = [
        f'<td class="job">{html.escape(stats.job_id)}</td>',
        f'<td class="runs">{runs}</td>',
        f'<td class="failures">{stats.failures}</td>',
        f'<td class="rate">{rate}</td>',
        f'<td class="p50">{seconds(p50)}</td>',
        f'<td class="max">{seconds(longest)}</td>',
        f'<td class="reason">{html.escape(reason)}</td>',
        f'<td class="chart">{chart(stats)}</td>',
    ]
    return f"<tr>{''.join(cells)}</tr>"


def render(stats: list[JobStats], period: str, since: datetime, now: datetime) -> str:
    total = sum(len(s.runs) for s in stats)
    failures = sum(s.failures for s in stats)
    rows = "\n".join(row(s) for s in stats) or '<tr><td colspan="8">No runs.</td></tr>'
    title = f"JobHost report: last {period}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #212121; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #e0e0e0; padding: 4px 10px; text-align: left; }}
td.runs, td.failures, td.rate, td.p50, td.max {{ text-align: right; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>From {since:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC:
<strong>{total}</strong> runs of <strong>{len(stats)}</strong> jobs,
<strong>{failures}</strong> failed.</p>
<table>
<thead><tr><th>job</th><th>runs</th><th>failures</th><th>success rate</th>
<th>duration p50</th><th>duration max</th><th>last failure</th><th>durations</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def main() -> int:
    period = str(context.variables.get("Period", "day") or "day")
    if period not in PERIODS:
        print(f"Period must be day or week, got {period!r}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    since = now - PERIODS[period]
    store = SqlStore(database_url(str(context.variables.get("Database", "") or "")))
    try:
        progress(0.1, "reading history")
        stats = by_job(load_history(store, since))
    finally:
        store.close()
    progress(0.7, "writing the report")
    suffix = "-test" if context.test else ""
    context.state_dir.mkdir(parents=True, exist_ok=True)
    path = context.state_dir / f"report-{now:%Y-%m-%d}{suffix}.html"
    path.write_text(render(stats, period, since, now), encoding="utf-8")
    executions = sum(len(s.runs) for s in stats)
    print(f"{executions} runs of {len(stats)} jobs in the last {period}")
    print(path)
    set_result(
        {
            "report": str(path),
            "jobs": len(stats),
            "executions": executions,
            "attachments": [str(path)],
        }
    )
    progress(1.0, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

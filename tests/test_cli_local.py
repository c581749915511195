"""The local ``jobhost`` verbs, run as real subprocesses against real job folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from jobhost.models import Execution, ExecutionStatus, Trigger
from tests.jobfolders import write_job

REPO = Path(__file__).resolve().parent.parent
EXECUTION_FIELDS = set(
    Execution(id="x", job_id="A/B", status=ExecutionStatus.QUEUED, trigger=Trigger.CLI, user=None)
    .to_api()
    .keys()
)


def jobhost_argv() -> list[str]:
    """The installed ``jobhost`` script, or the same entry point through this Python."""
    script = Path(sys.executable).with_name("jobhost")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from jobhost.cli import main; sys.argv[0] = 'jobhost'; main()",
    ]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no server, no stored credentials, the repo importable."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("JOBHOST_") and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(REPO)
    env["JOBHOST_CREDENTIALS"] = str(tmp_path / "no-credentials.json")
    env["COLUMNS"] = "200"  # wide tables: job IDs are not cut short
    env.update(extra)
    return env


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    root = tmp_path / "apps"
    write_job(
        root,
        "Shop",
        "Report",
        {"Name": "Report", "template_variables": {"Day": "which day"}},
        script_text=(
            "import os, sys\n"
            "print('report for', os.environ['JOBHOST_VAR_Day'], flush=True)\n"
            "print('to stderr', file=sys.stderr, flush=True)\n"
        ),
    )
    write_job(
        root,
        "Shop",
        "Broken",
        {"Name": "Broken"},
        script_text="print('half done', flush=True)\nraise SystemExit(3)\n",
    )
    write_job(root, "Shop", "Invalid", {"Name": "Invalid", "timeout_seconds": -5})
    write_job(
        root,
        "Shop",
        "Guarded",
        {"Name": "Guarded"},
        init=(
            "init-job.py",
            "import sys\n"
            "print('checking', file=sys.stderr)\n"
            "print('Target must be a host name', file=sys.stderr)\n"
            "sys.exit(1)\n",
        ),
    )
    return root


@pytest.fixture
def jobhost(tmp_path: Path, apps: Path) -> Run:
    """Run ``jobhost --apps APPS --data-dir DATA ARGS…`` in a temp working directory."""
    data = tmp_path / "data"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*jobhost_argv(), "--apps", str(apps), "--data-dir", str(data), *args],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_catalog_json_lists_valid_and_invalid_jobs(jobhost: Run) -> None:
    result = jobhost("catalog", "--json")
    assert result.returncode == 0, result.stderr
    jobs = {job["id"]: job for job in json.loads(result.stdout)}
    assert set(jobs) == {"Shop/Broken", "Shop/Guarded", "Shop/Invalid", "Shop/Report"}
    assert jobs["Shop/Report"]["valid"] is True
    assert jobs["Shop/Report"]["variables"][0]["name"] == "Day"
    assert jobs["Shop/Invalid"]["valid"] is False
    assert "timeout_seconds must be a positive number, got -5" in jobs["Shop/Invalid"]["errors"][0]


def test_catalog_table_counts_invalid_jobs(jobhost: Run) -> None:
    result = jobhost("catalog")
    assert result.returncode == 0, result.stderr
    assert "Shop/Report" in result.stdout
    assert "4 jobs, 1 invalid" in result.stdout


def test_validate_reports_the_problem_and_exits_3(jobhost: Run) -> None:
    result = jobhost("validate")
    assert result.returncode == 3
    assert "✗ Shop/Invalid" in result.stdout
    assert "Shop/jobs/Invalid/job.json: timeout_seconds must be a positive number, got -5" in (
        result.stdout
    )
    assert "✓ Shop/Report" in result.stdout


def test_validate_one_valid_job_exits_0(jobhost: Run) -> None:
    result = jobhost("validate", "Shop/Report")
    assert result.returncode == 0, result.stdout
    assert "✓ Shop/Report" in result.stdout


def test_validate_unknown_job_exits_5(jobhost: Run) -> None:
    result = jobhost("validate", "Shop/Nope")
    assert result.returncode == 5
    assert "No job 'Shop/Nope' in the catalog" in result.stderr


def test_new_scaffolds_a_job_that_passes_test_and_never_overwrites(
    jobhost: Run, apps: Path
) -> None:
    created = jobhost("new", "Blog", "Digest", "--description", "Weekly digest")
    assert created.returncode == 0, created.stderr
    folder = apps / "Blog" / "jobs" / "Digest"
    assert "Created" in created.stdout
    assert "jobhost test Blog/Digest" in created.stdout
    assert (folder / "job.json").exists()

    again = jobhost("new", "Blog", "Digest")
    assert again.returncode == 6
    assert "already exists; jobhost new never overwrites a job" in again.stderr

    tested = jobhost("test", "Blog/Digest")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "✓ job.json is valid" in tested.stdout
    assert "Job script succeeded (exit 0" in tested.stdout


def test_new_refuses_a_bad_job_name(jobhost: Run) -> None:
    result = jobhost("new", "Blog", "Bad$Name")
    assert result.returncode != 0
    assert "Bad$Name" in result.stderr


def test_test_with_failing_init_exits_1_with_its_message(jobhost: Run) -> None:
    result = jobhost("test", "Shop/Guarded")
    assert result.returncode == 1
    assert "✗ init script rejected the variables: Target must be a host name" in result.stdout


def test_test_json_reports_checks_and_the_execution(jobhost: Run) -> None:
    result = jobhost("test", "Shop/Report", "--var", "Day=monday", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {"ok": True, "message": "Variable 'Day' = 'monday'"} in report["checks"]
    assert report["execution"]["test"] is True
    assert report["execution"]["status"] == "succeeded"


def test_run_streams_output_and_is_recorded(jobhost: Run) -> None:
    result = jobhost("run", "Shop/Report", "--var", "Day=friday")
    assert result.returncode == 0, result.stderr
    assert "report for friday" in result.stdout
    assert "to stderr" in result.stdout  # stderr is captured into the same log
    assert "Job script succeeded (exit 0" in result.stderr

    history = jobhost("history", "--json")
    assert history.returncode == 0, history.stderr
    (execution,) = json.loads(history.stdout)
    assert set(execution) == EXECUTION_FIELDS
    assert execution["job_id"] == "Shop/Report"
    assert execution["status"] == "succeeded"
    assert execution["trigger"] == "cli"
    assert execution["variables"] == {"Day": "friday"}


def test_run_of_a_failing_job_exits_1_and_records_the_exit_code(jobhost: Run) -> None:
    result = jobhost("run", "Shop/Broken")
    assert result.returncode == 1
    assert "half done" in result.stdout
    assert "Job script failed (exit 3" in result.stderr
    history = json.loads(jobhost("history", "--json", "--status", "failed").stdout)
    assert [(e["job_id"], e["exit_code"]) for e in history] == [("Shop/Broken", 3)]


def test_run_with_missing_variable_names_it(jobhost: Run) -> None:
    result = jobhost("run", "Shop/Report")
    assert result.returncode == 2
    assert "Missing required variables: Day" in result.stderr


def test_run_bad_var_syntax_is_explained(jobhost: Run) -> None:
    result = jobhost("run", "Shop/Report", "--var", "Day")
    assert result.returncode == 2
    assert "--var takes NAME=VALUE, got 'Day'" in result.stderr


def test_status_and_output_json_of_a_recorded_run(jobhost: Run) -> None:
    run = jobhost("run", "Shop/Report", "--var", "Day=sunday", "--json")
    assert run.returncode == 0, run.stderr
    execution = json.loads(run.stdout)
    assert set(execution) == EXECUTION_FIELDS

    status = jobhost("status", execution["id"], "--json")
    assert status.returncode == 0, status.stderr
    recorded = json.loads(status.stdout)
    assert set(recorded) == EXECUTION_FIELDS
    assert recorded["id"] == execution["id"]
    assert recorded["status"] == "succeeded"
    assert recorded["exit_code"] == 0

    people = jobhost("status", execution["id"])
    assert "status: succeeded" in people.stdout

    output = jobhost("output", execution["id"])
    assert output.returncode == 0, output.stderr
    assert "report for sunday" in output.stdout
    skipped = jobhost("output", execution["id"], "--offset", "7")
    assert skipped.stdout == output.stdout[7:]


def test_status_of_unknown_execution_exits_5(jobhost: Run) -> None:
    result = jobhost("status", "nope")
    assert result.returncode == 5
    assert "No execution 'nope'" in result.stderr


def test_output_follow_without_a_server_says_what_to_do(jobhost: Run) -> None:
    result = jobhost("output", "abc", "--follow")
    assert result.returncode == 2
    assert "output --follow needs a server" in result.stderr


def test_ctrl_c_on_run_stops_the_job_and_its_process_group(
    tmp_path: Path, apps: Path, jobhost: Run
) -> None:
    write_job(
        apps,
        "Shop",
        "Slow",
        {"Name": "Slow", "stop_grace_seconds": 5},
        script_text=(
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print('ready', child.pid, flush=True)\n"
            "time.sleep(600)\n"
        ),
    )
    where = ["--apps", str(apps), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(
        [*jobhost_argv(), *where, "run", "Shop/Slow"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        grandchild = int(line.split()[1])
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "stopping…" in stderr
    assert "Job script stopped" in stderr

    (execution,) = json.loads(jobhost("history", "--json", "--job", "Shop/Slow").stdout)
    assert execution["status"] == "stopped"
    assert execution["stopped_by"].endswith(" (Ctrl-C in jobhost run)")
    assert execution["pid"] is not None
    # The whole group is gone, including what the script started. A killed process whose
    # parent died is reaped by whoever adopts it (init, or a container's PID 1), which
    # may take its time on a busy machine or never come: a zombie runs nothing and counts
    # as gone.
    assert _running_members(execution["pid"]) == []
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _running_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def test_schedule_verbs_work_on_the_local_store(jobhost: Run) -> None:
    changed = jobhost(
        "schedule", "set", "Shop/Report", "--cron", "*/10 * * * *", "--tz", "Europe/Berlin"
    )
    assert changed.returncode == 0, changed.stdout + changed.stderr
    disabled = jobhost("schedule", "disable", "Shop/Report", "--json")
    assert disabled.returncode == 0, disabled.stderr
    (schedule,) = json.loads(disabled.stdout)
    assert schedule["schedule"] == "*/10 * * * *"
    assert schedule["timezone"] == "Europe/Berlin"
    assert schedule["enabled"] is False
    assert schedule["source"] == "override"

    bad = jobhost("schedule", "set", "Shop/Report", "--tz", "Mars/Olympus")
    assert bad.returncode == 2
    assert "Mars/Olympus" in bad.stderr

    cleared = jobhost("schedule", "clear", "Shop/Report", "--json")
    assert json.loads(cleared.stdout)[0]["source"] == "none"


def test_local_catalog_shows_last_run_running_and_next_fire(jobhost: Run, apps: Path) -> None:
    write_job(
        apps,
        "Shop",
        "Nightly",
        {"Name": "Nightly", "default_schedule": "0 3 * * *", "timezone": "Europe/Paris"},
    )
    assert jobhost("run", "Shop/Broken").returncode != 0
    table = jobhost("catalog")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[1]: line for line in table.stdout.splitlines() if "Shop/" in line}
    assert "failed" in rows["Shop/Broken"]
    assert "not scheduled" in rows["Shop/Report"]
    assert "never" in rows["Shop/Report"]
    assert "T02:00:00Z" in rows["Shop/Nightly"] or "T01:00:00Z" in rows["Shop/Nightly"]
    listed = {job["id"]: job for job in json.loads(jobhost("catalog", "--json").stdout)}
    broken = listed["Shop/Broken"]
    assert broken["last_run"]["status"] == "failed"
    assert broken["last_run"]["exit_code"] == 3
    assert broken["active"] == []
    assert listed["Shop/Nightly"]["next_fire"] is not None
    assert listed["Shop/Report"]["next_fire"] is None


def test_schedule_table_does_not_call_an_unscheduled_job_enabled(jobhost: Run, apps: Path) -> None:
    write_job(apps, "Shop", "Nightly", {"Name": "Nightly", "default_schedule": "0 3 * * *"})
    result = jobhost("schedule", "show")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "Shop/" in line}
    assert " yes " in rows["Shop/Nightly"]
    assert " yes " not in rows["Shop/Report"]
    assert " no " not in rows["Shop/Report"]

"""The example jobs under apps/, run for real through the job script contract."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import load_definition
from tests.examples_support import (
    APPS,
    InitRejected,
    job_folder,
    run_init,
    run_job,
    start_job,
)

HELLO = job_folder("Demo/Hello")
FLAKY = job_folder("Demo/Flaky")
METRICS = job_folder("WebHostMetrics/CollectMetrics")
BACKUP = job_folder("Maintenance/DatabaseBackup")
ROTATION = job_folder("Maintenance/LogRotation")
HEALTH = job_folder("Monitoring/HealthCheck")
REPORT = job_folder("Reports/JobReport")
ALL_JOBS = [HELLO, FLAKY, METRICS, BACKUP, ROTATION, HEALTH, REPORT]
PG_URL = "postgresql://root@127.0.0.1:5432/test"


# ---------------------------------------------------------------- every job


@pytest.mark.parametrize("folder", ALL_JOBS, ids=lambda folder: folder.name)
def test_job_folder_is_valid_and_documented(folder: Path) -> None:
    data = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    definition, errors, warnings = load_definition(data, str(folder / "job.json"))
    assert errors == []
    assert warnings == []
    assert definition is not None
    assert (folder / definition.ScriptRelativePath).is_file()
    readme = (folder / "README.md").read_text(encoding="utf-8")
    job_id = f"{folder.parent.parent.name}/{folder.name}"
    assert f"jobhost test {job_id}" in readme
    assert f"jobhost start {job_id}" in readme


def test_every_job_folder_under_apps_is_covered() -> None:
    assert sorted(APPS.glob("*/jobs/*/job.json")) == sorted(f / "job.json" for f in ALL_JOBS)


# ---------------------------------------------------------------- Demo


def test_hello_greets_through_its_argument_list_and_reports_progress() -> None:
    run = run_job(HELLO, {"Name": "Ada Lovelace", "Greeting": "Good morning"})
    assert run.returncode == 0, run.stderr
    assert run.last_line == "Good morning, Ada Lovelace!"
    assert run.result == {"message": "Good morning, Ada Lovelace!", "user": "tester", "test": False}
    fractions = [update["progress"] for update in run.progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert run.progress[0]["message"] == "Warming up"


def test_hello_uses_the_default_greeting_and_refuses_a_long_one() -> None:
    assert run_job(HELLO, {"Name": "Bob"}, test=True).last_line == "Hello, Bob!"
    run = run_job(HELLO, {"Name": "Bob", "Greeting": "x" * 201})
    assert run.returncode == 2
    assert run.stderr.strip() == "Greeting must be at most 200 characters, got 201"


def test_flaky_fails_or_succeeds_as_its_fail_rate_says() -> None:
    failed = run_job(FLAKY, {"FailRate": 1})
    assert failed.returncode == 1
    assert "Simulated failure: rolled" in failed.stderr
    assert failed.result["failed"] is True
    passed = run_job(FLAKY, {"FailRate": 0})
    assert passed.returncode == 0
    assert passed.last_line.startswith("Succeeded: rolled")
    assert passed.result["failed"] is False


# ---------------------------------------------------------------- CollectMetrics


def test_collect_metrics_init_applies_the_default_and_accepts_text() -> None:
    assert run_init(METRICS, {}).variables == {"Interval": 30}
    assert run_init(METRICS, {"Interval": "60"}).variables == {"Interval": 60}


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (4, "Interval must be between 5 and 3600 seconds, got 4"),
        (3601, "Interval must be between 5 and 3600 seconds, got 3601"),
        ("soon", "Interval must be a whole number of seconds, got 'soon'"),
        (7.5, "Interval must be a whole number of seconds, got 7.5"),
    ],
)
def test_collect_metrics_init_rejects_bad_intervals(interval: Any, message: str) -> None:
    outcome = run_init(METRICS, {"Interval": interval})
    assert outcome.returncode == 1
    assert outcome.message == message
    with pytest.raises(InitRejected, match=message):
        run_job(METRICS, {"Interval": interval})


def test_collect_metrics_test_mode_collects_one_sample() -> None:
    run = run_job(METRICS, {}, test=True)
    assert run.returncode == 0, run.stderr
    for key in ("cpu_percent", "memory_percent", "disk_percent"):
        assert 0 <= run.result[key] <= 100
    assert len(run.result["load_average"]) == 3
    assert run.last_line == (
        f"Metrics collected: CPU {run.result['cpu_percent']:g}%, "
        f"Memory {run.result['memory_percent']:g}%, Disk {run.result['disk_percent']:g}%"
    )
    assert "[ok] Disk usage of / read" in run.stdout


def sample_then_stop(state_dir: Path) -> tuple[dict[str, Any], Any]:
    """Start CollectMetrics, await its first sample line, SIGTERM it, await the exit."""
    running = start_job(METRICS, {"Interval": 3600}, state_dir=state_dir)
    assert running.read_line().startswith("Sampling every 3600 s into ")
    first = json.loads(running.read_line())
    running.stop()
    return first, running.finish(timeout=30)


def test_collect_metrics_samples_until_sigterm_and_keeps_history(tmp_path: Path) -> None:
    first, run = sample_then_stop(tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.last_line == "Stopped after 1 sample"
    assert run.result == {"samples": 1, "last_sample": first}
    assert run.progress[0]["message"].startswith("Metrics collected: CPU ")
    history = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in history] == [first]
    # A second run appends to the same history.
    second, _ = sample_then_stop(tmp_path)
    history = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in history] == [first, second]


def test_collect_metrics_stops_cleanly_however_many_sigterms_arrive(tmp_path: Path) -> None:
    # A burst of SIGTERMs once deadlocked the job: its handler set a threading.Event
    # while the main thread held that event's lock inside wait(), so the run hung
    # until SIGKILL (and lost its result). Several rounds, since the window is narrow.
    for round_ in range(8):
        running = start_job(METRICS, {"Interval": 3600}, state_dir=tmp_path / str(round_))
        running.read_line()
        running.read_line()
        for _ in range(300):
            try:
                running.stop()
            except ProcessLookupError:
                break
        run = running.finish(timeout=30)
        assert run.returncode == 0, run.stderr
        assert run.last_line == "Stopped after 1 sample"


def test_collect_metrics_trims_history_to_the_newest_10000(tmp_path: Path) -> None:
    old = [json.dumps({"n": n}) for n in range(12_000)]
    (tmp_path / "samples.jsonl").write_text("\n".join(old) + "\n", encoding="utf-8")
    first, run = sample_then_stop(tmp_path)
    assert run.returncode == 0, run.stderr
    history = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(history) == 10_000
    assert json.loads(history[0]) == {"n": 2001}
    assert json.loads(history[-1]) == first


# ---------------------------------------------------------------- DatabaseBackup


def make_sqlite(path: Path, rows: int = 3) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE notes (body TEXT)")
        db.executemany("INSERT INTO items (name) VALUES (?)", [(f"item {n}",) for n in range(rows)])
    db.close()


def restored_rows(backup: Path, scratch: Path) -> list[str]:
    plain = scratch / "restored.sqlite3"
    if backup.suffix == ".gz":
        with gzip.open(backup, "rb") as packed, plain.open("wb") as out:
            shutil.copyfileobj(packed, out)
    else:
        shutil.copy(backup, plain)
    with sqlite3.connect(plain) as db:
        names = [row[0] for row in db.execute("SELECT name FROM items ORDER BY id")]
    db.close()
    return names


def test_database_backup_of_sqlite_is_verified_compressed_and_restorable(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    destination = tmp_path / "backups"
    run = run_job(BACKUP, {"Source": str(tmp_path / "shop.db"), "Destination": str(destination)})
    assert run.returncode == 0, run.stderr
    backup = Path(run.result["path"])
    assert backup.parent == destination
    assert backup.name.startswith("shop-")
    assert backup.name.endswith(".sqlite3.gz")
    assert [p.name for p in destination.iterdir()] == [backup.name]  # no leftovers
    assert run.result["verified"] is True
    assert run.result["bytes"] == backup.stat().st_size
    assert run.result["tables"] == 2
    assert run.result["deleted"] == []
    assert restored_rows(backup, tmp_path) == ["item 0", "item 1", "item 2"]
    assert run.last_line.startswith(f"Backup written: {backup} (")


def test_database_backup_uncompressed_keeps_a_plain_sqlite_file(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db", rows=1)
    run = run_job(
        BACKUP,
        {"Source": str(tmp_path / "shop.db"), "Destination": str(tmp_path), "Compress": False},
    )
    assert run.returncode == 0, run.stderr
    assert run.result["path"].endswith(".sqlite3")
    assert restored_rows(Path(run.result["path"]), tmp_path) == ["item 0"]


def test_database_backup_keeps_the_newest_backups_of_that_source_only(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    destination = tmp_path / "backups"
    destination.mkdir()
    kept_apart = ["other-20200101T000000Z.sqlite3.gz", "shop-notes.txt"]
    old = [f"shop-2020010{day}T000000Z.sqlite3.gz" for day in range(1, 5)]
    for name in kept_apart + old:
        (destination / name).write_bytes(b"old")
    run = run_job(
        BACKUP, {"Source": str(tmp_path / "shop.db"), "Destination": str(destination), "Keep": 2}
    )
    assert run.returncode == 0, run.stderr
    assert run.result["deleted"] == [str(destination / name) for name in reversed(old[:3])]
    new = Path(run.result["path"]).name
    assert sorted(p.name for p in destination.iterdir()) == sorted([*kept_apart, old[3], new])
    assert "Deleted old backup shop-20200101T000000Z.sqlite3.gz" in run.stdout


def test_database_backup_test_mode_leaves_the_destination_alone(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    destination = tmp_path / "backups"
    run = run_job(
        BACKUP, {"Source": str(tmp_path / "shop.db"), "Destination": str(destination)}, test=True
    )
    assert run.returncode == 0, run.stderr
    assert not destination.exists()
    assert run.result["verified"] is True
    assert run.result["test"] is True
    assert not Path(run.result["path"]).exists()
    assert run.last_line.startswith("Test passed: a ")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"Source": "/nowhere/shop.db", "Destination": "/tmp"},
            "Source '/nowhere/shop.db' is not a file: give an existing SQLite database",
        ),
        (
            {"Source": "postgresql://app:hunter2@db.example", "Destination": "/tmp"},
            "Source URL names no database (postgresql://host/dbname), "
            "got 'postgresql://app:***@db.example'",
        ),
        (
            {"Source": "mysql://db/shop", "Destination": "/tmp"},
            "Source URL must start with postgresql://, got 'mysql://db/shop'",
        ),
        (
            {"Source": PG_URL, "Destination": "backups"},
            "Destination must be an absolute folder path, got 'backups'",
        ),
        (
            {"Source": PG_URL, "Destination": "/tmp", "Keep": 0},
            "Keep must be a whole number between 1 and 365, got 0",
        ),
    ],
)
def test_database_backup_init_rejects_bad_variables(
    variables: dict[str, Any], message: str
) -> None:
    outcome = run_init(BACKUP, variables)
    assert outcome.returncode == 1
    assert outcome.message == message


def test_database_backup_init_rejects_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    outcome = run_init(BACKUP, {"Source": str(tmp_path / "notes.txt"), "Destination": "/tmp"})
    assert (
        outcome.message
        == f"Source '{tmp_path}/notes.txt' is not a SQLite database (no SQLite header)"
    )


def pg_available() -> bool:
    if shutil.which("pg_dump") is None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A uniquely named table in the test database, dropped afterwards."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 with pg_dump on PATH is required in CI")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 or pg_dump is not available")
    import psycopg
    from psycopg import sql

    table = f"backup_probe_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as db:
        name = sql.Identifier(table)
        db.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, name text)").format(name))
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'one')").format(name))
    try:
        yield table
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as db:
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.mark.postgres
def test_database_backup_of_postgresql_dumps_and_never_prints_the_password(
    pg_table: str, tmp_path: Path
) -> None:
    # The local server trusts root, so the password is ignored by it but must still be hidden.
    source = "postgresql://root:hunter2@127.0.0.1:5432/test"
    run = run_job(BACKUP, {"Source": source, "Destination": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    dump = Path(run.result["path"])
    assert dump.name.startswith("test-")
    assert dump.name.endswith(".dump")
    listing = subprocess.run(
        ["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True
    )
    assert f"TABLE public {pg_table} " in listing.stdout
    assert "hunter2" not in run.stdout + run.stderr + json.dumps(run.result)
    assert "Backing up postgresql://root:***@127.0.0.1:5432/test into" in run.stdout


def test_database_backup_failure_of_pg_dump_is_reported_without_the_password(
    tmp_path: Path,
) -> None:
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not on PATH")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = run_job(
        BACKUP,
        {"Source": f"postgresql://app:hunter2@127.0.0.1:{port}/shop", "Destination": str(tmp_path)},
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("Backup failed: pg_dump failed: ")
    assert "hunter2" not in run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- LogRotation


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        entry.name: os.readlink(entry)
        if entry.is_symlink()
        else hashlib.sha256(entry.read_bytes()).hexdigest()
        for entry in sorted(folder.iterdir())
    }


def gunzip_text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read()


def rotate(folder: Path, test: bool = False, **variables: Any) -> Any:
    return run_job(ROTATION, {"Folder": str(folder), **variables}, test=test)


def test_log_rotation_by_size_shifts_and_compresses_older_copies(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("x" * 2000, encoding="utf-8")
    (tmp_path / "app.log.1").write_text("one", encoding="utf-8")
    with gzip.open(tmp_path / "app.log.2.gz", "wt", encoding="utf-8") as file:
        file.write("two")
    (tmp_path / "small.log").write_text("tiny", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("y" * 2000, encoding="utf-8")
    run = rotate(tmp_path, MaxBytes=1000, Keep=3)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "app.log").read_text(encoding="utf-8") == ""
    assert (tmp_path / "app.log.1").read_text(encoding="utf-8") == "x" * 2000
    assert gunzip_text(tmp_path / "app.log.2.gz") == "one"
    assert gunzip_text(tmp_path / "app.log.3.gz") == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.log", "app.log.1", "app.log.2.gz", "app.log.3.gz", "notes.txt", "small.log",
    ]  # fmt: skip
    assert run.result["rotated"] == ["app.log"]
    assert all(action["done"] for action in run.result["actions"])
    assert "app.log: 2000 bytes > MaxBytes 1000" in run.stdout
    assert run.last_line == "Rotated 1 of 2 matching files, 0 skipped"


def test_log_rotation_keeps_only_keep_copies(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("current\n", encoding="utf-8")
    (tmp_path / "app.log.1").write_text("one\n", encoding="utf-8")
    for number in (2, 3, 5):
        with gzip.open(tmp_path / f"app.log.{number}.gz", "wt", encoding="utf-8") as file:
            file.write(f"{number}\n")
    run = rotate(tmp_path, MaxBytes=1, Keep=2)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.1", "app.log.2.gz"]
    assert (tmp_path / "app.log.1").read_text(encoding="utf-8") == "current\n"
    assert gunzip_text(tmp_path / "app.log.2.gz") == "one\n"
    deleted = [a["path"] for a in run.result["actions"] if a["op"] == "delete"]
    assert deleted == ["app.log.5.gz", "app.log.3.gz", "app.log.2.gz"]


def test_log_rotation_by_age_rotates_only_quiet_logs(tmp_path: Path) -> None:
    (tmp_path / "old.log").write_text("old\n", encoding="utf-8")
    (tmp_path / "fresh.log").write_text("fresh\n", encoding="utf-8")
    ten_days_ago = time.time() - 10 * 86_400
    os.utime(tmp_path / "old.log", (ten_days_ago, ten_days_ago))
    run = rotate(tmp_path, MaxBytes=0, MaxAgeDays=7)
    assert run.returncode == 0, run.stderr
    assert run.result["rotated"] == ["old.log"]
    assert (tmp_path / "old.log.1").read_text(encoding="utf-8") == "old\n"
    assert not (tmp_path / "fresh.log.1").exists()
    assert "old.log: last written 10.0 days ago > MaxAgeDays 7" in run.stdout


def test_log_rotation_refuses_symlinks_and_hard_links_out_of_the_folder(tmp_path: Path) -> None:
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    logs.mkdir()
    outside.mkdir()
    secret = outside / "secret.log"
    secret.write_text("do not touch\n" * 100, encoding="utf-8")
    (logs / "escape.log").symlink_to(secret)
    os.link(secret, logs / "linked.log")
    (logs / "app.log").write_text("a" * 100, encoding="utf-8")
    (logs / "app.log.2").symlink_to(outside / "victim")
    before = fingerprint(outside)
    run = rotate(logs, MaxBytes=10, CopyTruncate=True)
    assert run.returncode == 0, run.stderr
    assert fingerprint(outside) == before
    assert sorted(p.name for p in logs.iterdir()) == [
        "app.log",
        "app.log.2",
        "escape.log",
        "linked.log",
    ]
    assert run.result["rotated"] == []
    reasons = {skip["file"]: skip["reason"] for skip in run.result["skipped"]}
    assert reasons == {
        "app.log": "rotated copy app.log.2 is a symlink; refusing to touch this log",
        "escape.log": f"symlink to {secret}; symlinks are never rotated",
        "linked.log": "has 2 hard links; rotating it would change a file outside the folder",
    }
    assert f"[skipped] escape.log: symlink to {secret}; symlinks are never rotated" in run.stdout
    assert run.last_line == "Rotated 0 of 3 matching files, 3 skipped"


def test_log_rotation_works_inside_a_symlinked_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "app.log").write_text("z" * 50, encoding="utf-8")
    (tmp_path / "link").symlink_to(real)
    run = rotate(tmp_path / "link", MaxBytes=10)
    assert run.returncode == 0, run.stderr
    assert (real / "app.log.1").read_text(encoding="utf-8") == "z" * 50
    assert f"Folder {tmp_path / 'link'} is a symlink; working inside {real}" in run.stdout


WRITER = """
import sys
with open(sys.argv[1], "a", encoding="utf-8") as log:
    for n in range(50):
        log.write(f"before {n}\\n")
    log.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    log.write("after rotation\\n")
    log.flush()
"""


def test_log_rotation_copy_truncate_keeps_a_live_writer_logging(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdin is not None
        assert writer.stdout.readline() == "ready\n"
        run = rotate(tmp_path, MaxBytes=100, CopyTruncate=True)
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    assert run.returncode == 0, run.stderr
    assert [a["op"] for a in run.result["actions"]] == ["copytruncate"]
    # The writer kept its file handle; its next line starts the truncated file.
    assert log.read_text(encoding="utf-8") == "after rotation\n"
    rotated = (tmp_path / "app.log.1").read_text(encoding="utf-8").splitlines()
    assert rotated == [f"before {n}" for n in range(50)]


def test_log_rotation_test_mode_is_a_dry_run(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("x" * 2000, encoding="utf-8")
    (tmp_path / "app.log.1").write_text("one", encoding="utf-8")
    (tmp_path / "app.log.5.gz").write_bytes(gzip.compress(b"five"))
    before = fingerprint(tmp_path)
    run = rotate(tmp_path, test=True, MaxBytes=1000, Keep=5)
    assert run.returncode == 0, run.stderr
    assert fingerprint(tmp_path) == before
    assert run.result["dry_run"] is True
    assert [(a["op"], a["path"], a["to"], a["done"]) for a in run.result["actions"]] == [
        ("delete", "app.log.5.gz", None, False),
        ("rename", "app.log.1", "app.log.2", False),
        ("compress", "app.log.2", "app.log.2.gz", False),
        ("rotate", "app.log", "app.log.1", False),
    ]
    assert "would rotate app.log -> app.log.1" in run.stdout
    assert run.last_line == "Would rotate 1 of 1 matching files, 0 skipped; nothing was changed"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"Folder": "logs"}, "Folder must be an absolute path, got 'logs'"),
        ({"Folder": "/nowhere/logs"}, "Folder '/nowhere/logs' is not an existing folder"),
        (
            {"Folder": "/tmp", "Pattern": "../*.log"},
            "Pattern must be a file-name glob such as *.log (no '/'), got '../*.log'",
        ),
        (
            {"Folder": "/tmp", "MaxBytes": 0},
            "MaxBytes and MaxAgeDays are both 0: set one of them, or nothing is ever rotated",
        ),
        ({"Folder": "/tmp", "Keep": 0}, "Keep must be a whole number of at least 1, got 0"),
    ],
)
def test_log_rotation_init_rejects_bad_variables(variables: dict[str, Any], message: str) -> None:
    outcome = run_init(ROTATION, variables)
    assert outcome.returncode == 1
    assert outcome.message == message


# ---------------------------------------------------------------- HealthCheck


class Site:
    """A real local HTTP server whose health the test switches."""

    def __init__(self) -> None:
        self.healthy = True
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(0.05)  # the server side of a slow answer, not a test wait
                status, body = (200, b"status: ok") if site.healthy else (503, b"down")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def site() -> Iterator[Site]:
    running = Site()
    yield running
    running.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_health_check_follows_a_site_going_down_and_recovering(site: Site) -> None:
    variables = {"Urls": f"{site.url}/health|status: ok", "Ports": f"127.0.0.1:{site.port}"}
    up = run_job(HEALTH, variables)
    assert up.returncode == 0, up.stderr
    assert up.last_line == "2/2 checks passed"
    assert [(c["kind"], c["ok"], c["status"]) for c in up.result["checks"]] == [
        ("http", True, 200),
        ("tcp", True, None),
    ]
    site.healthy = False
    down = run_job(HEALTH, variables)
    assert down.returncode == 1
    assert down.last_line == "1/2 checks passed"
    failed = down.result["checks"][0]
    assert (failed["target"], failed["ok"], failed["status"]) == (f"{site.url}/health", False, 503)
    assert failed["error"] == "HTTP 503 Service Unavailable"
    assert f"[FAIL] http {site.url}/health 503 in " in down.stdout
    site.healthy = True
    assert run_job(HEALTH, variables).returncode == 0


def test_health_check_reports_missing_text_slow_answers_and_closed_ports(site: Site) -> None:
    port = closed_port()
    urls = f"{site.url}/|not here\n{site.url}/slow"
    run = run_job(HEALTH, {"Urls": urls, "Ports": f"127.0.0.1:{port}", "LatencyBudgetMs": 1})
    assert run.returncode == 1
    assert run.last_line == "0/3 checks passed"
    missing, slow, closed = run.result["checks"]
    assert missing["error"] == "expected text 'not here' not found in the body"
    assert slow["status"] == 200
    assert slow["error"].endswith("ms, over the 1 ms budget")
    assert closed["target"] == f"127.0.0.1:{port}"
    assert "Connection refused" in closed["error"]


def test_health_check_test_mode_runs_the_same_checks(site: Site) -> None:
    run = run_job(HEALTH, {"Urls": site.url}, test=True)
    assert run.returncode == 0, run.stderr
    assert run.result["passed"] == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"Urls": "", "Ports": ""},
            "Nothing to check: give at least one URL in Urls or host:port in Ports",
        ),
        (
            {"Urls": "ftp://example.com"},
            "Urls: 'ftp://example.com' is not an http:// or https:// URL",
        ),
        (
            {"Ports": "db:99999"},
            "Ports: 'db:99999' is not host:port with a port from 1 to 65535",
        ),
    ],
)
def test_health_check_init_rejects_bad_targets(variables: dict[str, Any], message: str) -> None:
    outcome = run_init(HEALTH, variables)
    assert outcome.returncode == 1
    assert outcome.message == message

"""The ``jobhost`` CLI against a real ``jobhost serve`` process, both as subprocesses."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from jobhost.client import Client, StreamEvent, iter_sse, plain
from jobhost.errors import NotFound
from jobhost.models import ExecutionStatus
from jobhost.server.schemas import ExecutionOut, HistoryPage, JobOut
from tests.jobfolders import write_job
from tests.test_cli_local import EXECUTION_FIELDS, cli_env, jobhost_argv

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "admin-password-1"
Run = Callable[..., subprocess.CompletedProcess[str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    root: Path
    log: list[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("remote")
    apps = root / "apps"
    write_job(
        apps,
        "Shop",
        "Report",
        {"Name": "Report", "template_variables": {"Day": "which day"}},
        script_text="import os\nprint('report for', os.environ['JOBHOST_VAR_Day'], flush=True)\n",
    )
    write_job(
        apps,
        "Shop",
        "Slow",
        {"Name": "Slow", "stop_grace_seconds": 5},
        script_text="import time\nprint('ready', flush=True)\ntime.sleep(600)\n",
    )
    write_job(apps, "Shop", "Locked", {"Name": "Locked", "roles_start": ["operator"]})
    port = free_port()
    env = cli_env(root, JOBHOST_ADMIN_PASSWORD=ADMIN_PASSWORD)
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
    # Ready when uvicorn says it listens; a crash ends the pipe instead.
    for line in proc.stdout:
        log.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        proc.wait()
        pytest.fail("jobhost serve exited before listening:\n" + "".join(log))
    # Keep draining, or a full pipe would block the server's logging.
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


def make_runner(home: Path, **env: str) -> Run:
    """``jobhost ARGS…`` with its own credentials file ``home/credentials.json``."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*jobhost_argv(), *args],
            cwd=home,
            env=cli_env(home, JOBHOST_CREDENTIALS=str(home / "credentials.json"), **env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=90,
        )

    return run


def login(server: Server, home: Path, username: str, password: str) -> Run:
    home.mkdir(parents=True, exist_ok=True)
    run = make_runner(home)
    result = run(
        "login",
        "--server",
        server.url,
        "--username",
        username,
        "--password-stdin",
        stdin=password + "\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Signed in to {server.url} as {username}" in result.stdout
    return run


@pytest.fixture(scope="module")
def admin(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return login(server, tmp_path_factory.mktemp("admin"), "admin", ADMIN_PASSWORD)


def test_login_stores_a_private_token(server: Server, tmp_path: Path, admin: Run) -> None:
    run = login(server, tmp_path, "admin", ADMIN_PASSWORD)
    path = tmp_path / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["server"] == server.url
    assert stored["token"].startswith("jh_")

    tokens = run("tokens", "list", "--json")
    assert tokens.returncode == 0, tokens.stderr
    mine = [t for t in json.loads(tokens.stdout) if t["id"] == stored["token_id"]]
    assert [t["name"] for t in mine] == [f"cli@{socket.gethostname()}"]


def test_wrong_password_is_refused_with_the_servers_message(server: Server, tmp_path: Path) -> None:
    run = make_runner(tmp_path)
    result = run(
        "login",
        "--server",
        server.url,
        "--username",
        "admin",
        "--password-stdin",
        stdin="not-the-password\n",
    )
    assert result.returncode == 4
    assert "Invalid username or password" in result.stderr
    assert not (tmp_path / "credentials.json").exists()


def test_start_follow_streams_output_until_done(admin: Run) -> None:
    result = admin("start", "Shop/Report", "--var", "Day=monday", "--follow")
    assert result.returncode == 0, result.stderr
    assert "report for monday" in result.stdout
    assert "Job script succeeded (exit 0" in result.stderr


def test_start_status_output_follow_and_history(admin: Run) -> None:
    started = admin("start", "Shop/Report", "--var", "Day=tuesday", "--json")
    assert started.returncode == 0, started.stderr
    execution = json.loads(started.stdout)
    assert set(execution) == EXECUTION_FIELDS
    assert execution["user"] == "admin"

    followed = admin("output", execution["id"], "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "report for tuesday\n"

    status = admin("status", execution["id"], "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "succeeded"

    output = admin("output", execution["id"])
    assert output.stdout == "report for tuesday\n"

    history = admin("history", "--json", "--job", "Shop/Report")
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert execution["id"] in [row["id"] for row in rows]
    assert all(set(row) == EXECUTION_FIELDS for row in rows)


def test_start_in_or_at_schedules_the_run_and_stop_cancels_it(admin: Run) -> None:
    scheduled = admin("start", "Shop/Report", "--var", "Day=friday", "--in", "90s", "--json")
    assert scheduled.returncode == 0, scheduled.stderr
    planned = json.loads(scheduled.stdout)
    assert planned["status"] == "scheduled"
    created = datetime.fromisoformat(planned["created_at"])
    due = datetime.fromisoformat(planned["due_at"])
    assert 89 <= (due - created).total_seconds() <= 91
    stopped = admin("stop", "--execution", planned["id"], "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)[0]["status"] == "stopped"

    when = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    paris = when.astimezone(timezone(timedelta(hours=1))).isoformat()  # "...T06:00:00+01:00"
    at = admin("start", "Shop/Report", "--var", "Day=x", "--at", paris)
    assert at.returncode == 0, at.stderr
    assert at.stdout.endswith(f"scheduled for {when.isoformat().replace('+00:00', 'Z')}\n")
    admin("stop", "--execution", at.stdout.split()[0])

    bad = admin("start", "Shop/Report", "--in", "soon")
    assert bad.returncode != 0
    assert "--in must be a delay such as 90s, 15m, 2h or 1d, got 'soon'" in bad.stderr


def test_running_restart_and_stop(admin: Run) -> None:
    first = json.loads(admin("start", "Shop/Slow", "--json").stdout)
    running = json.loads(admin("running", "--json").stdout)
    assert first["id"] in [e["id"] for e in running]

    restarted = admin("restart", "Shop/Slow", "--json")
    assert restarted.returncode == 0, restarted.stderr
    second = json.loads(restarted.stdout)
    assert second["id"] != first["id"]
    assert second["trigger"] == "restart"
    assert json.loads(admin("status", first["id"], "--json").stdout)["status"] == "stopped"

    stopped = admin("stop", "--execution", second["id"], "--follow", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert [(e["id"], e["status"]) for e in json.loads(stopped.stdout)] == [
        (second["id"], "stopped")
    ]
    running = json.loads(admin("running", "--json").stdout)
    assert not [e for e in running if e["job_id"] == "Shop/Slow"]

    again = admin("stop", "Shop/Slow")
    assert again.returncode == 6
    assert "has no running execution to stop" in again.stderr


def test_followed_run_that_is_stopped_exits_1(admin: Run, server: Server) -> None:
    started = json.loads(admin("start", "Shop/Slow", "--json").stdout)
    follower = subprocess.Popen(
        [*jobhost_argv(), "output", started["id"], "--follow"],
        cwd=server.root,
        env=cli_env(server.root, JOBHOST_SERVER=server.url, JOBHOST_TOKEN=_token(admin)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "ready\n"  # live output reached the CLI
        assert admin("stop", "--execution", started["id"]).returncode == 0
        follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0  # output --follow only streams; it ended with the run
    assert json.loads(admin("status", started["id"], "--json").stdout)["status"] == "stopped"


def test_run_goes_through_the_server_and_ctrl_c_stops_it_there(admin: Run, server: Server) -> None:
    done = admin("run", "Shop/Report", "--var", "Day=friday")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "report for friday\n"
    assert f"started on {server.url}" in done.stderr
    history = json.loads(admin("history", "--json", "--job", "Shop/Report").stdout)
    assert history[0]["user"] == "admin"  # the server's run, as the signed-in user

    runner = subprocess.Popen(
        [*jobhost_argv(), "run", "Shop/Slow"],
        cwd=server.root,
        env=cli_env(server.root, JOBHOST_SERVER=server.url, JOBHOST_TOKEN=_token(admin)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stderr is not None
        assert runner.stdout is not None
        first = runner.stderr.readline()
        assert "started on" in first
        execution_id = first.split()[1]
        assert runner.stdout.readline() == "ready\n"  # live output reached the CLI
        runner.send_signal(signal.SIGINT)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 1, err  # the run did not succeed: it was stopped
    assert "stopping…" in err
    final = json.loads(admin("status", execution_id, "--json").stdout)
    assert final["status"] == "stopped"
    assert final["stopped_by"] == "admin (token follower)"  # the token the run used


def _token(run: Run) -> str:
    created = run("tokens", "create", "follower", "--json")
    assert created.returncode == 0, created.stderr
    token: str = json.loads(created.stdout)["token"]
    return token


def test_unknown_job_is_the_servers_404(admin: Run) -> None:
    result = admin("start", "Shop/Nope")
    assert result.returncode == 5
    assert "No job 'Shop/Nope' in the catalog" in result.stderr


def test_catalog_and_test_go_to_the_server(admin: Run) -> None:
    catalog = admin("catalog", "--json")
    assert catalog.returncode == 0, catalog.stderr
    jobs = {job["id"]: job for job in json.loads(catalog.stdout)}
    assert set(jobs) == {"Shop/Locked", "Shop/Report", "Shop/Slow"}
    assert jobs["Shop/Locked"]["permissions"]["start"] is True

    tested = admin("test", "Shop/Report", "--var", "Day=friday", "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    report = json.loads(tested.stdout)
    assert report["ok"] is True
    assert report["execution"]["test"] is True
    assert report["execution"]["status"] == "succeeded"

    missing = admin("test", "Shop/Report")
    assert missing.returncode == 1
    assert "Missing required variables: Day" in missing.stdout


def test_local_options_win_over_stored_credentials(admin: Run, tmp_path: Path) -> None:
    result = admin(
        "--data-dir", str(tmp_path / "local-data"), "--apps", str(tmp_path), "history", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_users_and_a_viewer_denied_a_start(server: Server, admin: Run, tmp_path: Path) -> None:
    added = admin(
        "users", "add", "viewer1", "--role", "viewer", "--password-stdin", stdin="viewer-password\n"
    )
    assert added.returncode == 0, added.stderr
    assert "Created viewer1: viewer" in added.stdout
    users = json.loads(admin("users", "list", "--json").stdout)
    assert {"username": "viewer1", "roles": ["viewer"]}.items() <= next(
        u for u in users if u["username"] == "viewer1"
    ).items()

    viewer = login(server, tmp_path / "viewer", "viewer1", "viewer-password")
    denied = viewer("start", "Shop/Locked")
    assert denied.returncode == 4
    assert "'viewer1' may not start 'Shop/Locked': requires one of the roles operator" in (
        denied.stderr
    )
    not_admin = viewer("users", "list")
    assert not_admin.returncode == 4
    assert "'viewer1' is not a superuser" in not_admin.stderr

    granted = admin("users", "set-roles", "viewer1", "viewer", "operator", "--json")
    assert sorted(json.loads(granted.stdout)["roles"]) == ["operator", "viewer"]
    allowed = viewer("start", "Shop/Locked", "--follow")
    assert allowed.returncode == 0, allowed.stderr

    disabled = admin("users", "disable", "viewer1")
    assert "Disabled viewer1" in disabled.stdout
    locked_out = viewer("running")
    assert locked_out.returncode == 4
    assert "Invalid, expired or revoked API token" in locked_out.stderr

    deleted = admin("users", "delete", "viewer1", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    users = json.loads(admin("users", "list", "--json").stdout)
    assert "viewer1" not in [u["username"] for u in users]


def test_tokens_create_and_revoke(server: Server, admin: Run, tmp_path: Path) -> None:
    created = admin("tokens", "create", "ci-deploy", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    script = make_runner(tmp_path, JOBHOST_SERVER=server.url, JOBHOST_TOKEN=token["token"])
    assert script("running", "--json").returncode == 0

    revoked = admin("tokens", "revoke", token["id"])
    assert revoked.returncode == 0, revoked.stderr
    refused = script("running")
    assert refused.returncode == 4
    assert "Invalid, expired or revoked API token" in refused.stderr
    assert "jobhost login" in refused.stderr


def test_schedule_verbs_change_the_running_servers_schedule(admin: Run) -> None:
    changed = admin("schedule", "set", "Shop/Report", "--cron", "0 4 * * *", "--var", "Day=mon")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    shown = admin("schedule", "show", "Shop/Report", "--json")
    assert shown.returncode == 0, shown.stderr
    (schedule,) = json.loads(shown.stdout)
    assert schedule["schedule"] == "0 4 * * *"
    assert schedule["source"] == "override"
    assert schedule["variables"] == {"Day": "mon"}
    assert schedule["next_fires"][0].endswith("T04:00:00Z")

    bad = admin("schedule", "set", "Shop/Report", "--cron", "61 * * * *")
    assert bad.returncode == 2
    assert "61" in bad.stderr

    cleared = admin("schedule", "clear", "Shop/Report", "--json")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)[0]["source"] == "none"


def test_audit_shows_what_happened(admin: Run) -> None:
    result = admin("audit", "--limit", "200", "--json")
    assert result.returncode == 0, result.stderr
    actions = {event["action"] for event in json.loads(result.stdout)}
    assert {"auth.login", "token.create", "job.start"} <= actions


def test_logout_revokes_the_token_and_forgets_it(server: Server, tmp_path: Path) -> None:
    run = login(server, tmp_path, "admin", ADMIN_PASSWORD)
    token = json.loads((tmp_path / "credentials.json").read_text())["token"]
    result = run("logout")
    assert result.returncode == 0, result.stderr
    assert f"Signed out of {server.url}" in result.stdout
    assert not (tmp_path / "credentials.json").exists()

    old = make_runner(tmp_path, JOBHOST_SERVER=server.url, JOBHOST_TOKEN=token)("running")
    assert old.returncode == 4
    assert "Invalid, expired or revoked API token" in old.stderr


def test_server_down_exits_8_with_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = make_runner(tmp_path)
    result = run("--server", url, "running")
    assert result.returncode == 8
    assert f"Cannot reach JobHost at {url}" in result.stderr
    stored = make_runner(tmp_path, JOBHOST_SERVER=url)("history")
    assert stored.returncode == 8
    assert f"Cannot reach JobHost at {url}" in stored.stderr


def test_remote_verbs_without_a_server_say_how_to_configure_one(tmp_path: Path) -> None:
    result = make_runner(tmp_path)("running")
    assert result.returncode == 2
    assert "No JobHost server configured: run 'jobhost login --server URL'" in result.stderr


def test_stored_token_is_not_sent_to_another_server(
    server: Server, admin: Run, tmp_path: Path
) -> None:
    other = f"http://localhost:{server.url.rsplit(':', 1)[1]}"  # same server, another name
    result = admin("--server", other, "running")
    assert result.returncode == 4
    assert "Sign in first" in result.stderr


def test_idempotency_key_starts_one_run(admin: Run) -> None:
    args = ("start", "Shop/Report", "--var", "Day=sunday", "--idempotency-key", "deploy-42")
    first = json.loads(admin(*args, "--json").stdout)
    second = json.loads(admin(*args, "--json").stdout)
    assert first["id"] == second["id"]


def test_client_follow_resumes_from_an_offset(server: Server, admin: Run) -> None:
    with Client(server.url, _token(admin)) as client:
        execution = client.start("Shop/Report", {"Day": "wednesday"})
        events = list(client.follow(execution.id, offset=len("report for ")))
        text = "".join(e.data["output"] for e in events if e.event == "output")
        assert text == "wednesday\n"
        assert events[-1].event == "end"
        assert events[-1].data["status"] == "succeeded"
        with pytest.raises(NotFound, match="No execution 'nope'"):
            client.status("nope")


def test_client_answers_are_the_servers_own_models(server: Server, admin: Run) -> None:
    with Client(server.url, _token(admin)) as client:
        execution = client.start("Shop/Report", {"Day": "monday"})
        assert isinstance(execution, ExecutionOut)
        list(client.follow(execution.id))
        done = client.status(execution.id)
        assert done.status is ExecutionStatus.SUCCEEDED
        assert isinstance(done.created_at, datetime)
        assert done.variables == {"Day": "monday"}
        page = client.history(job_id="Shop/Report", limit=1)
        assert isinstance(page, HistoryPage)
        assert page.executions[0].id == execution.id
        jobs = client.catalog()
        assert all(isinstance(job, JobOut) for job in jobs)
        assert "Shop/Report" in {job.id for job in jobs}
        assert client.output(execution.id).output == "report for monday\n"
        assert client.healthz().status == "ok"
        assert plain(done) == client.call("GET", f"/api/v1/jobs/status/{execution.id}")


def test_sse_parser_handles_comments_multiline_data_and_ids() -> None:
    lines = [
        ": heartbeat",
        "",
        "event: output",
        "id: 12",
        'data: {"output": "hi", "offset": 10,',
        'data:  "next_offset": 12}',
        "",
        "event: end",
        "data: not json",
        "",
    ]
    events = list(iter_sse(iter(lines)))
    assert events == [
        StreamEvent("output", {"output": "hi", "offset": 10, "next_offset": 12}, "12"),
        StreamEvent("end", "not json", None),
    ]


class _DroppingStream(BaseHTTPRequestHandler):
    """An SSE endpoint whose first connection drops after one event."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        resume = self.headers.get("Last-Event-ID")
        self.seen.append(resume)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        if len(self.seen) == 1:
            body = (
                'event: output\nid: 6\ndata: {"output": "first ", "offset": 0, "next_offset": 6}'
                "\n\n"
            )
        else:
            body = (
                f'event: output\nid: 12\ndata: {{"output": "second", "offset": {resume}, '
                '"next_offset": 12}\n\n'
                'event: end\ndata: {"id": "e1", "status": "succeeded"}\n\n'
            )
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_follow_reconnects_with_last_event_id_after_a_drop() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _DroppingStream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{httpd.server_address[1]}", "jh_x") as client:
            events = list(client.follow("e1"))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert "".join(e.data["output"] for e in events if e.event == "output") == "first second"
    assert events[-1] == StreamEvent("end", {"id": "e1", "status": "succeeded"}, None)
    assert _DroppingStream.seen == ["0", "6"]


def test_passwd_changes_your_own_password(server: Server, admin: Run, tmp_path: Path) -> None:
    added = admin("users", "add", "pw1", "--password-stdin", stdin="first-password\n")
    assert added.returncode == 0, added.stderr
    user = login(server, tmp_path / "pw1", "pw1", "first-password")
    wrong = user("passwd", "--password-stdin", stdin="not-it\nsecond-password\n")
    assert wrong.returncode == 4
    assert "The current password is wrong; nothing was changed" in wrong.stderr
    changed = user("passwd", "--password-stdin", stdin="first-password\nsecond-password\n")
    assert changed.returncode == 0, changed.stderr
    assert "Password changed; your other sessions were signed out" in changed.stderr
    login(server, tmp_path / "pw1-again", "pw1", "second-password")

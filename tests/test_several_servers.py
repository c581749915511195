"""Two real ``jobhost serve`` processes on one PostgreSQL schema, each with its own data dir
and its own node name (as if on two machines): neither touches the other's runs; a stop
or a restart sent to either reaches the run's owner; the output of one's run reads through
the other (by offset and over SSE, resumed with Last-Event-ID); and an owner killed for
good has its runs resolved by the survivor once its lease has expired."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.jobfolders import write_job
from tests.serverfixtures import ADMIN_PASSWORD, USER_PASSWORD, write_apps
from tests.test_server_process import REPO, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAIT = 120.0  # generous: the machine is busy
# Prints, waits for the file its variable names, reports progress, then runs until
# stopped and takes 3 s to finish after SIGTERM (so ``stopping`` lasts a moment).
REPORTER = """\
import os, signal, sys, time

class Stop(Exception):
    pass

def on_term(*_):
    raise Stop

signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while not os.path.exists(os.environ["JOBHOST_VAR_Gate"]):
    time.sleep(0.02)
os.write(int(os.environ["JOBHOST_CONTROL_FD"]), b'{"progress": 0.5, "message": "halfway"}\\n')
try:
    time.sleep(600)
except Stop:
    time.sleep(3)
"""


class Server:
    """One ``jobhost serve`` process on the shared database."""

    def __init__(self, tmp_path: Path, name: str, database_url: str) -> None:
        self.name = name
        self.data_dir = tmp_path / f"data-{name}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBHOST_")},
            "PYTHONPATH": str(REPO),
            "JOBHOST_CONFIG": str(tmp_path / "none.toml"),
            "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "JOBHOST_DATABASE_URL": database_url,
            "JOBHOST_NODE_NAME": f"node-{name}",
            # A short lease, so that a dead owner is resolved in seconds, not 20-25 s.
            "JOBHOST_LEASE_HEARTBEAT_SECONDS": "0.5",
            "JOBHOST_LEASE_TTL_SECONDS": "3",
            "JOBHOST_SCHEDULER_ENABLED": "false",
            "JOBHOST_WATCH": "false",
            "JOBHOST_NOTIFICATIONS_ENABLED": "false",
        }
        argv = [sys.executable, "-c", "from jobhost.cli import main; main()"]
        argv += ["--apps", str(tmp_path / "apps"), "--data-dir", str(self.data_dir)]
        argv += ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        # Its log is read on a thread of its own all along, so a full pipe never blocks it.
        self.log: list[str] = []
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._serving.wait(WAIT) or self.process.poll() is not None:
            raise AssertionError(f"server {name} did not start:\n{''.join(self.log)}")

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # the banner: the engine is open and bound
            self.log.append(line)
            if "JobHost serving" in line:
                self._serving.set()
        self._serving.set()

    @contextlib.contextmanager
    def client(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.url, timeout=WAIT) as client:
            body = {"username": username, "password": password}
            login = client.post("/api/v1/auth/login", json=body)
            assert login.status_code == 200, login.text
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            yield client

    def instance_id(self) -> str:
        with self.client() as client:
            return str(client.get("/api/v1/instances").json()["current"])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=WAIT)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        self.kill()


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Server, Server]]:
    write_apps(tmp_path / "apps")
    reporter = {"Name": "Reporter", "template_variables": {"Gate": "file to wait for"}}
    write_job(tmp_path / "apps", "Lab", "Reporter", reporter, script_text=REPORTER)
    started: list[Server] = []
    try:
        started.append(Server(tmp_path, "a", postgres_url))  # makes the admin first
        started.append(Server(tmp_path, "b", postgres_url))
        with started[0].client() as admin:
            made = admin.post(
                "/api/v1/users", json={"username": "ops", "password": USER_PASSWORD, "roles": []}
            )
            assert made.status_code == 201, made.text
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def sse(response: httpx.Response) -> Iterator[tuple[str, str | None, Any]]:
    """``(event, id, data)`` of each SSE message as it arrives; a heartbeat comes as
    ``("heartbeat", None, None)``, so that a loop waiting for an event can keep a deadline."""
    event, event_id = "message", None
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "heartbeat", None, None
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            yield event, event_id, json.loads(line[6:])
        elif line == "":
            event, event_id = "message", None


def next_event(changes: Iterator[tuple[str, str | None, Any]]) -> tuple[str, str | None, Any]:
    """The next SSE message that is not a heartbeat."""
    return next(change for change in changes if change[0] != "heartbeat")


def until_ended(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    """Follow the run's output stream to its ``end`` event (awaited, no polling)."""
    with client.stream("GET", f"/api/v1/jobs/output/{execution_id}/stream") as stream:
        for event, _, data in sse(stream):
            if event == "end":
                return dict(data)
    raise AssertionError(f"the stream of {execution_id} ended without an end event")


def until_output(client: httpx.Client, execution_id: str, text: str) -> str | None:
    """Follow the output until ``text`` has appeared; the id of the event that completed it."""
    seen = ""
    with client.stream("GET", f"/api/v1/jobs/output/{execution_id}/stream") as stream:
        for event, event_id, data in sse(stream):
            if event == "output":
                seen += data["output"]
                if text in seen:
                    return event_id
    raise AssertionError(f"{text!r} never appeared in the output of {execution_id}: {seen!r}")


def group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    # A member that is only a zombie is gone for the user (its parent reaps it soon).
    with contextlib.suppress(psutil.NoSuchProcess):
        return all(p.status() == psutil.STATUS_ZOMBIE for p in group_members(pid))
    return True


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess):
            if os.getpgid(process.pid) == pgid:
                members.append(process)
    return members


def start(client: httpx.Client, job_id: str, **variables: str) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": job_id}
    if variables:
        body["variables"] = variables
    response = client.post("/api/v1/jobs/start", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.mark.timeout(600)
def test_stops_and_restarts_sent_to_either_server_reach_the_owner(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    a_id, b_id = a.instance_id(), b.instance_id()
    with a.client() as on_a, b.client("ops", USER_PASSWORD) as ops_on_b, b.client() as on_b:
        run = start(on_a, "Lab/Slow")
        until_output(on_a, run["id"], "ready")
        # B answers for A's run and leaves it alone.
        seen = on_b.get(f"/api/v1/jobs/status/{run['id']}").json()
        assert (seen["status"], seen["owner"], seen["host"]) == ("running", a_id, "node-a")
        assert not group_gone(seen["pid"])
        listed = on_b.get("/api/v1/jobs/running").json()["executions"]
        assert [e["id"] for e in listed] == [run["id"]]

        # A stop sent to B reaches A, which stops the run and records who asked; B's live
        # events carry the end of A's run.
        with on_b.stream("GET", "/api/v1/jobs/events") as events:
            changes = sse(events)
            assert next_event(changes)[0] == "snapshot"
            stopped = ops_on_b.post("/api/v1/jobs/stop", json={"execution_id": run["id"]})
            assert stopped.status_code == 202, stopped.text
            assert stopped.json()["executions"][0]["status"] in ("stopping", "stopped")
            deadline = time.monotonic() + WAIT  # heartbeats keep the stream from idling
            for event, _, data in changes:
                if event == "execution" and data["id"] == run["id"] and data["status"] == "stopped":
                    assert data["stopped_by"] == "ops"
                    break
                assert time.monotonic() < deadline, "B's events never told the end of A's run"
        final = until_ended(ops_on_b, run["id"])
        assert (final["status"], final["stopped_by"], final["owner"]) == ("stopped", "ops", a_id)
        assert group_gone(seen["pid"])
        audit = on_b.get("/api/v1/audit", params={"action": "job.stop"}).json()["events"]
        (entry,) = [e for e in audit if run["id"] in e["details"].get("executions", [])]
        assert entry["user"] == "ops"
        assert entry["details"]["forwarded_to"] == a_id

        # A restart sent to B: A stops the run and starts the next one, which is A's too.
        first = start(on_a, "Lab/Slow")
        until_output(on_a, first["id"], "ready")
        restarted = ops_on_b.post("/api/v1/jobs/restart", json={"execution_id": first["id"]})
        assert restarted.status_code == 202, restarted.text
        second = restarted.json()
        assert second["id"] != first["id"]
        assert (second["owner"], second["trigger"], second["user"]) == (a_id, "restart", "ops")
        ended = on_a.get(f"/api/v1/jobs/status/{first['id']}").json()
        assert (ended["status"], ended["stopped_by"]) == ("stopped", "ops (restart)")
        until_output(ops_on_b, second["id"], "ready")

        # And the other way round: a run of B's, stopped through A.
        theirs = start(on_b, "Lab/Slow")
        until_output(on_b, theirs["id"], "ready")
        assert on_a.post("/api/v1/jobs/stop", json={"execution_id": theirs["id"]}).is_success
        final = until_ended(on_a, theirs["id"])
        assert (final["status"], final["stopped_by"], final["owner"]) == ("stopped", "admin", b_id)

        assert on_b.post("/api/v1/jobs/stop", json={"execution_id": second["id"]}).is_success
        assert until_ended(on_b, second["id"])["stopped_by"] == "admin"


@pytest.mark.timeout(600)
def test_the_other_server_tells_its_subscribers_a_runs_progress_and_stopping(
    tmp_path: Path, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    gate = tmp_path / "gate"
    with a.client() as on_a, b.client() as on_b:
        run = start(on_a, "Lab/Reporter", Gate=str(gate))
        until_output(on_a, run["id"], "ready")
        with on_b.stream("GET", "/api/v1/jobs/events") as events:
            changes = sse(events)
            assert next_event(changes)[0] == "snapshot"  # subscribed: nothing can be missed now
            gate.touch()  # the run reports its progress on A
            seen: list[tuple[str, str | None, float | None]] = []
            deadline = time.monotonic() + WAIT  # heartbeats keep the stream from idling
            for event, _, data in changes:
                assert time.monotonic() < deadline, f"B told only {seen} of A's run"
                if event == "execution" and data["id"] == run["id"]:
                    seen.append((data["status"], data["progress_message"], data["progress"]))
                    if data["status"] == "running" and data["progress_message"] == "halfway":
                        stopped = on_a.post("/api/v1/jobs/stop", json={"execution_id": run["id"]})
                        assert stopped.status_code == 202, stopped.text
                    elif data["status"] == "stopping":
                        assert data["stopped_by"] == "admin"
                    elif data["status"] == "stopped":
                        break
        assert ("running", "halfway", 0.5) in seen
        # In this order (B may read a row twice: repeats say nothing).
        changes_seen = dict.fromkeys(status for status, _, _ in seen if status != "running")
        assert list(changes_seen) == ["stopping", "stopped"]


@pytest.mark.timeout(600)
def test_output_of_a_run_reads_through_the_other_server(
    tmp_path: Path, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    gate = tmp_path / "gate"
    with a.client() as on_a, b.client("ops", USER_PASSWORD) as on_b:
        run = start(on_a, "Lab/Gate", Gate=str(gate))
        # Over SSE through B: the first line, then a reconnection from its event id.
        resume_from = until_output(on_b, run["id"], "first\n")
        assert resume_from == str(len("first\n"))
        page = on_b.get(f"/api/v1/jobs/output/{run['id']}", params={"offset": 0}).json()
        assert (page["output"], page["next_offset"]) == ("first\n", 6)
        gate.touch()
        rest = ""
        headers = {"Last-Event-ID": resume_from}
        with on_b.stream("GET", f"/api/v1/jobs/output/{run['id']}/stream", headers=headers) as s:
            for event, _, data in sse(s):
                if event == "output":
                    rest += data["output"]
                elif event == "end":
                    final = data
                    break
        assert rest == "second\n"
        assert (final["status"], final["owner"]) == ("succeeded", a.instance_id())
        # By offset, once it has ended: the whole log, from the middle too.
        page = on_b.get(f"/api/v1/jobs/output/{run['id']}", params={"offset": 6}).json()
        assert (page["output"], page["done"]) == ("second\n", True)
        history = on_b.get("/api/v1/jobs/history", params={"job_id": "Lab/Gate"}).json()
        assert [item["id"] for item in history["executions"]] == [run["id"]]

    # The internal route B used takes no user credential, an admin's session included.
    with a.client() as on_a:
        refused = on_a.get(f"/api/v1/cluster/output/{run['id']}")
        assert refused.status_code == 401
        assert "only other JobHost servers" in refused.json()["error"]["message"]


@pytest.mark.timeout(600)
def test_an_owner_killed_for_good_has_its_runs_resolved_after_its_lease(
    tmp_path: Path, postgres_url: str, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    a_id = a.instance_id()
    with a.client() as on_a:
        run = start(on_a, "Lab/Slow")
        until_output(on_a, run["id"], "ready")
        pid = on_a.get(f"/api/v1/jobs/status/{run['id']}").json()["pid"]
    with b.client() as on_b, on_b.stream("GET", "/api/v1/jobs/events") as events:
        changes = sse(events)
        assert next_event(changes)[0] == "snapshot"  # subscribed: no change can be missed now
        a.kill()  # for good: its lease runs out (3 s), and B resolves its runs
        for event, _, data in changes:
            if event == "execution" and data["id"] == run["id"] and data["status"] == "lost":
                lost = data
                break
    assert lost["error"].startswith(f"Its owner, server {a_id[:8]} (pid {a.process.pid} on node-a)")
    assert "on host node-a; this server on node-b cannot follow it there" in lost["error"]
    assert lost["owner"] == b.instance_id()
    # Its log is on node a, where no server runs now: B says so instead of showing nothing.
    with b.client() as on_b:
        unreachable = on_b.get(f"/api/v1/jobs/output/{run['id']}")
    assert unreachable.status_code == 503
    assert "is kept on host node-a" in unreachable.json()["error"]["message"]
    # Node a is "another machine" to B, so its job still runs there; the next server on
    # node a with that data dir finds the run recorded lost and ends it.
    assert not group_gone(pid)
    again = Server(tmp_path, "a", postgres_url)
    try:
        with again.client() as on_again:
            assert on_again.get("/healthz").json()["status"] == "ok"
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=WAIT)
        assert group_gone(pid)
    finally:
        again.stop()

"""A real ``jobhost serve`` process for tests and benchmarks that kill it: start it on a
data dir, talk to it over HTTP, SIGKILL or SIGTERM it, start the next one.

Also what the durability checks need from outside the server: the job processes alive on
this machine (by the ``JOBHOST_EXECUTION_ID`` in their environment, read from /proc) and
the runner processes of a data dir.

Import explicitly: ``from tests.serveprocess import ServeProcess``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

ADMIN_PASSWORD = "admin-password-1"
REPO = Path(__file__).resolve().parent.parent
BANNER = "JobHost serving"
EXECUTION_ID_ENV = b"JOBHOST_EXECUTION_ID="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """One ``jobhost serve`` on ``apps`` and ``data_dir``; ``client`` is signed in as admin.

    Its stderr is drained by a thread (a server that logs more than a pipe holds must not
    block on it); the start returns once the banner says the engine is open and bound
    (``wait=False``: at once, with no client).
    """

    def __init__(
        self,
        apps: Path,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        timeout: float = 90,
        wait: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[str] = []
        environment = {
            **os.environ,
            "JOBHOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "JOBHOST_CONFIG": str(data_dir.parent / "none.toml"),
            "JOBHOST_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        command = [sys.executable, "-c", "from jobhost.cli import main; main()"]
        command += ["--apps", str(apps), "--data-dir", str(data_dir), "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command,
            env=environment,
            cwd=data_dir.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        if not wait:  # the caller means to kill it while it starts up
            return
        if not self.ready.wait(timeout) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("jobhost serve did not start:\n" + "".join(self.log[-40:]))
        self.client = httpx.Client(base_url=self.url, timeout=60)
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        session = self.client.post("/api/v1/auth/login", json=login)
        session.raise_for_status()
        self.client.headers["X-CSRF-Token"] = session.json()["csrf_token"]

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if BANNER in line:
                self.ready.set()
        self.ready.set()  # ended before its banner: the start sees poll() is not None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, job_id: str, variables: dict[str, Any] | None = None, **headers: str) -> str:
        """Start ``job_id``; the execution ID once the server acknowledged it (202)."""
        body: dict[str, Any] = {"job_id": job_id}
        if variables:
            body["variables"] = variables
        response = self.client.post("/api/v1/jobs/start", json=body, headers=headers)
        if response.status_code != 202:
            raise AssertionError(f"start of {job_id}: {response.status_code} {response.text}")
        return str(response.json()["id"])

    def status(self, execution_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/jobs/status/{execution_id}")
        response.raise_for_status()
        return dict(response.json())

    def stop(self, execution_id: str) -> None:
        response = self.client.post("/api/v1/jobs/stop", json={"execution_id": execution_id})
        assert response.status_code == 202, response.text

    def events(self, execution_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The run's live output stream (SSE), event by event, until it ends."""
        path = f"/api/v1/jobs/output/{execution_id}/stream"
        with self.client.stream("GET", path, timeout=httpx.Timeout(60, read=None)) as stream:
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    yield event, json.loads(line[6:])

    def wait_output(self, execution_id: str, text: str) -> None:
        """Until ``text`` is in the run's output (the stream pushes it; no polling)."""
        seen = ""
        for event, data in self.events(execution_id):
            if event == "output":
                seen += data["output"]
                if text in seen:
                    return
            if event == "end":
                raise AssertionError(f"the run ended without printing {text!r}: {seen!r}")

    def wait_end(self, execution_id: str) -> dict[str, Any]:
        """Until the run has ended (its stream's ``end`` event); then its status."""
        for event, _ in self.events(execution_id):
            if event == "end":
                break
        return self.status(execution_id)

    def output(self, execution_id: str) -> str:
        """The run's whole output, read page by page through the API."""
        text, offset = "", 0
        while True:
            response = self.client.get(
                f"/api/v1/jobs/output/{execution_id}", params={"offset": offset}
            )
            response.raise_for_status()
            page = response.json()
            text += page["output"]
            if page["next_offset"] == offset or page["done"]:
                return text
            offset = page["next_offset"]

    def kill(self, signum: int = signal.SIGKILL, timeout: float = 60) -> int:
        """Signal the server and await its exit; its exit status."""
        if hasattr(self, "client"):
            self.client.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drain.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code


def job_processes(data_dir: Path) -> dict[str, list[int]]:
    """Every live job process of ``data_dir`` (by the ``JOBHOST_EXECUTION_ID`` and
    ``JOBHOST_DATA_DIR`` in its environment): execution ID → its pids.

    Other data dirs' jobs on the same machine are left out, and so are zombies (they run
    nothing) and processes that end while being read.
    """
    home = b"JOBHOST_DATA_DIR=" + os.fsencode(data_dir.resolve())
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        if home not in variables:
            continue
        for variable in variables:
            if variable.startswith(EXECUTION_ID_ENV):
                execution_id = variable[len(EXECUTION_ID_ENV) :].decode()
                found.setdefault(execution_id, []).append(int(entry.name))
                break
    return found


def runner_processes(data_dir: Path) -> list[psutil.Process]:
    """The runner process(es) of ``data_dir`` (one at most, by its lock)."""
    marker = str(data_dir / "runner")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "jobhost.runner" in cmdline and any(marker in arg for arg in cmdline):
            found.append(process)
    return found


def end_runner(data_dir: Path) -> None:
    """SIGKILL the runner of ``data_dir`` and every process it still holds."""
    members: list[psutil.Process] = []
    for runner in runner_processes(data_dir):
        with contextlib.suppress(psutil.NoSuchProcess):
            members += [*runner.children(recursive=True), runner]
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(members, timeout=10)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pid: int, timeout: float = 60) -> bool:
    """Await the end of any process (not only our children) through its pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return bool(readable) or not alive(pid)

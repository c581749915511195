"""Secrets never leave the run: masked by value in every stored or sent text (errors,
results, progress, output, notifications), in the live stream too, and nowhere on disk."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import load_definition
from jobhost.execution.output import OutputLog, read_output
from jobhost.models import Execution, ExecutionStatus, Trigger
from jobhost.redact import OutputMasker, mask_execution, mask_text
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.serverfixtures import events, make_settings, running_harness

SECRET = "S3cr3t-Value-0815-xyz"

# Prints the secret in two writes with a pause between (so the host reads it in two
# pieces), puts it in its result, its progress message and its last stderr line, fails.
SCRIPT = """
import json, os, sys, time
tok = os.environ["JOBHOST_VAR_Tok"]
assert os.environ["TOKEN"] == tok and sys.argv[1] == "--tok=" + tok
sys.stdout.write("token is " + tok[:7]); sys.stdout.flush()
time.sleep(0.5)
sys.stdout.write(tok[7:] + " and again " + tok + "\\n"); sys.stdout.flush()
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as f:
    json.dump({"tok": tok, "nested": ["x" + tok + "y"], tok: 1}, f)
print("failing with " + tok, file=sys.stderr)
sys.exit(3)
"""
JOB = {
    "Name": "Secret",
    "argumentlist": ["--tok={{Tok}}"],
    "env": {"TOKEN": "{{Tok}}"},
    "template_variables": {"Tok": {"type": "string", "secret": True}},
    "notify": [{"on": ["failed"], "channel": "hook"}],
}


class Receiver:
    """A webhook receiver in this process: keeps every body it gets."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()
                receiver.got.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_masking_catches_the_value_and_its_quoted_forms() -> None:
    secret = 'pa"ss\nw\x00rd'
    message = f"Cannot start {secret!r}; json: {json.dumps(secret)}; plain {secret}"
    assert mask_text(message, [secret]) == "Cannot start '***'; json: \"***\"; plain ***"
    # The longer secret first, so one containing another is never half-shown.
    assert mask_text("abcdef abc", ["abc", "abcdef"]) == "*** ***"


def test_results_errors_and_progress_are_masked() -> None:
    execution = Execution(
        id="e1",
        job_id="A/B",
        status=ExecutionStatus.FAILED,
        trigger=Trigger.USER,
        user="u",
        error=f"boom {SECRET}",
        result={"k": SECRET, SECRET: [1, f"<{SECRET}>"]},
        progress_message=f"using {SECRET}",
    )
    masked = mask_execution(execution, [SECRET])
    assert masked.error == "boom ***"
    assert masked.result == {"k": "***", "***": [1, "<***>"]}
    assert masked.progress_message == "using ***"
    assert mask_execution(masked, [SECRET]) is masked


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 64])
def test_output_masks_a_secret_split_across_writes(tmp_path: Path, size: int) -> None:
    stream = f"a{SECRET}b {SECRET[:4]} {SECRET}{SECRET}\ntail {SECRET[:-1]}".encode()
    log = OutputLog(str(tmp_path / "x.log"), 1 << 20, [SECRET])
    for start in range(0, len(stream), size):
        log.write(stream[start : start + size])
    log.close()
    data, _ = read_output(str(tmp_path / "x.log"), 0, 1 << 20)
    expected = f"a***b {SECRET[:4]} ******\ntail {SECRET[:-1]}".encode()
    assert data == expected
    assert log.total_bytes == len(expected)


def test_the_masker_holds_back_only_a_possible_start_of_a_secret() -> None:
    masker = OutputMasker([SECRET])
    assert masker.feed(b"line one\n") == b"line one\n"
    assert masker.feed(b"now " + SECRET[:3].encode()) == b"now "
    assert masker.feed(b"X") == SECRET[:3].encode() + b"X"
    assert masker.flush() == b""


def test_validate_warns_about_a_secret_on_the_command_line() -> None:
    _, errors, warnings = load_definition({"ScriptRelativePath": "run.py", **JOB}, "job.json")
    assert errors == []
    assert warnings == [
        "job.json: argumentlist[0] puts the secret variable {{Tok}} on the command line, "
        "where any local user can read it (ps, /proc/<pid>/cmdline); pass it in env "
        "instead, or read JOBHOST_VAR_Tok"
    ]


def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and needle in path.read_bytes():  # not the runner's socket
                found.append(str(path))
    return found


@pytest.mark.slow
async def test_no_secret_reaches_the_database_the_logs_or_a_webhook(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write_job(apps, "T", "Secret", JOB, script_text=SCRIPT)
    receiver = Receiver()
    settings = make_settings(
        tmp_path,
        notifications_enabled=True,
        channels={"hook": {"type": "webhook", "url": receiver.url, "backoff_seconds": 0.01}},
    )
    try:
        async for harness in running_harness(settings):
            admin = await harness.admin()
            nul = await admin.post(
                "/api/v1/jobs/start",
                json={"job_id": "T/Secret", "variables": {"Tok": SECRET + "\u0000"}},
            )
            assert nul.status_code == 422, nul.text
            started = await admin.post(
                "/api/v1/jobs/start", json={"job_id": "T/Secret", "variables": {"Tok": SECRET}}
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["id"]
            stream = await admin.get(f"/api/v1/jobs/output/{execution_id}/stream")
            assert stream.status_code == 200
            parsed = events(stream.text)
            live = "".join(data["output"] for kind, _, data in parsed if kind == "output")
            assert live.startswith("token is *** and again ***\n"), live
            assert "failing with ***" in live
            status = (await admin.get(f"/api/v1/jobs/status/{execution_id}")).json()
            assert status["status"] == "failed"
            assert status["result"] == {"tok": "***", "nested": ["x***y"], "***": 1}
            assert status["variables"] == {"Tok": "***"}
            await asyncio.to_thread(receiver.got.wait, 60)
            assert receiver.bodies, "the webhook was never called"
            for path in ("/api/v1/jobs/history", "/api/v1/jobs/catalog/T/Secret"):
                response = await admin.get(path)
                assert SECRET not in response.text
            await harness.engine.journal.flush()
            # While the server runs, so the WAL still holds what was written.
            assert _files_holding(settings.data_dir, SECRET.encode()) == []
            assert any(name.endswith("-wal") for name in os.listdir(settings.data_dir))
        for body in receiver.bodies:
            assert SECRET.encode() not in body
            assert b"***" in body
        assert _files_holding(settings.data_dir, SECRET.encode()) == []
    finally:
        receiver.close()


# Waits for a gate file, so that it ends only after its server was replaced.
GATED = """
import json, os, pathlib, sys, time
tok = os.environ["JOBHOST_VAR_Tok"]
gate = pathlib.Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.05)
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as f:
    json.dump({"tok": tok}, f)
print("failing with " + tok, file=sys.stderr)
sys.exit(3)
"""


async def test_a_run_adopted_by_the_next_server_is_masked_too(
    tmp_path: Path, engine_factory: EngineFactory, apps: Path
) -> None:
    gate = tmp_path / "gate"
    job = {
        "Name": "Gated",
        "argumentlist": [str(gate)],
        "template_variables": {"Tok": {"type": "string", "secret": True}},
    }
    write_job(apps, "T", "Gated", job, script_text=GATED)
    async with engine_factory() as first:
        changes = first.changes()
        execution = await first.start("T/Gated", {"Tok": SECRET})
        async for change in changes:
            if change.id == execution.id and change.pid is not None:
                break
    # The first server is gone (its run goes on); the next one adopts the run.
    async with engine_factory() as second:
        adopted = await second.status(execution.id)
        assert adopted.status is ExecutionStatus.RUNNING
        assert adopted.owner == second.instance_id
        gate.write_text("open")
        final = await asyncio.wait_for(second.wait(execution.id), 60)
    assert final.status is ExecutionStatus.FAILED
    assert final.result == {"tok": "***"}
    assert SECRET not in json.dumps(final.to_api())

"""Notifications end to end: real jobs through a real engine, a real SMTP server
(aiosmtpd) and a real HTTP receiver, both in this process."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.definition import load_definition
from jobhost.engine import JobHost
from jobhost.errors import BadRequest
from jobhost.notify import Notifier
from jobhost.notify.channels import parse_channels
from jobhost.store.deliveries import Delivery
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.notifyfixtures import SmtpServer
from tests.serverfixtures import make_settings, running_harness

# Prints 25 numbered lines and the secret, then exits with the code it is given.
SCRIPT = (
    "import os, sys\n"
    "for n in range(1, 26):\n"
    "    print(f'line {n}')\n"
    "print('token=' + os.environ.get('JOBHOST_VAR_Token', ''))\n"
    "sys.exit(int(os.environ['JOBHOST_VAR_Code']))\n"
)
VARIABLES = {
    "Code": {"description": "exit code", "type": "integer", "default": 0},
    "Token": {"description": "an API token", "type": "string", "default": "", "secret": True},
}
PUBLIC_URL = "https://jobs.example.com"
SECRET = "s3cr3t-token-value"


# ---------------------------------------------------------------- receivers


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server in a thread that records POSTs and answers ``status``."""

    port: int = 0
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(Request(dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"receiver says no" if receiver.status >= 400 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- helpers


def write_notifying_job(apps: Path, notify: list[dict[str, Any]], job: str = "Nightly") -> str:
    write_job(
        apps,
        "Ops",
        job,
        {"Name": f"{job} run", "template_variables": VARIABLES, "notify": notify},
        script_text=SCRIPT,
    )
    return f"Ops/{job}"


def email_settings(smtp: SmtpServer, **channel: Any) -> dict[str, Any]:
    return {
        "notifications_enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "public_url": PUBLIC_URL,
        "channels": {"ops": {"type": "email", "to": ["oncall@example.com"], **channel}},
    }


def hook_settings(receiver: Receiver, **channel: Any) -> dict[str, Any]:
    config = {"type": "webhook", "url": receiver.url, "backoff_seconds": 0.01, **channel}
    return {"notifications_enabled": True, "channels": {"chat": config}}


def text_of(message: EmailMessage) -> str:
    """The plain-text body with the wire's CRLF line ends turned back into newlines."""
    part = message.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def notifier_of(engine: JobHost) -> Notifier:
    assert engine.notifier is not None
    return engine.notifier


def settled(deliveries: list[Delivery]) -> bool:
    return bool(deliveries) and all(d.status != "pending" for d in deliveries)


async def run(engine: JobHost, job_id: str, **variables: Any) -> list[Delivery]:
    """Run the job to its end and return its deliveries once none is pending."""
    execution = await engine.wait((await engine.start(job_id, variables)).id)
    notifier = notifier_of(engine)
    await notifier.flush()
    found = await notifier.deliveries(execution.id)
    if not found:
        return []
    return await notifier.wait_for(execution.id, settled)


# ---------------------------------------------------------------- email


async def test_a_failing_run_emails_each_recipient_of_the_rule(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    job_id = write_notifying_job(
        apps, [{"on": ["failed"], "channel": "ops", "to": ["a@example.com", "b@example.com"]}]
    )
    async with engine_factory(**email_settings(smtp_server)) as engine:
        deliveries = await run(engine, job_id, Code=3)
    assert [(d.recipient, d.status, d.attempts) for d in deliveries] == [
        ("a@example.com", "sent", 1),
        ("b@example.com", "sent", 1),
    ]
    assert sorted(smtp_server.inbox.recipients) == [["a@example.com"], ["b@example.com"]]
    message = smtp_server.inbox.messages[0]
    assert message["Subject"] == "[JobHost] Ops/Nightly failed (exit 3)"
    assert message["From"] == "jobhost@localhost"
    body = text_of(message)
    execution_id = deliveries[0].execution_id
    assert "Job:        Ops/Nightly (Nightly run)" in body
    assert "Exit code:  3" in body
    assert "Started by: jobhost (user)" in body
    assert f"Open it: {PUBLIC_URL}/#/executions/{execution_id}" in body
    # The last 20 lines of output: lines 7..25 and the token line, not the first ones.
    assert "line 7\nline 8" in body
    assert "line 25\ntoken=" in body
    assert "line 6\n" not in body


async def test_a_rule_without_to_uses_the_channel_recipients_and_success_is_quiet(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["failed", "timed_out"], "channel": "ops"}])
    async with engine_factory(**email_settings(smtp_server)) as engine:
        assert await run(engine, job_id, Code=0) == []
        deliveries = await run(engine, job_id, Code=1)
    assert [(d.recipient, d.event, d.status) for d in deliveries] == [
        ("oncall@example.com", "failed", "sent")
    ]
    assert len(smtp_server.inbox.messages) == 1


async def test_secret_values_never_appear_in_a_message(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["failed"], "channel": "ops"}])
    async with engine_factory(**email_settings(smtp_server)) as engine:
        deliveries = await run(engine, job_id, Code=1, Token=SECRET)
    assert deliveries[0].status == "sent"
    raw = smtp_server.inbox.messages[0].as_string()
    body = text_of(smtp_server.inbox.messages[0])
    assert SECRET not in raw
    assert "token=***" in body
    assert "Token=***" in body  # the stored, redacted variables
    assert SECRET not in json.dumps(deliveries[0].payload)


async def test_test_runs_never_notify(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["failed", "succeeded"], "channel": "ops"}])
    async with engine_factory(**email_settings(smtp_server)) as engine:
        execution = await engine.wait((await engine.test(job_id, {"Code": 1})).id)
        notifier = notifier_of(engine)
        await notifier.flush()
        assert execution.status.value == "failed"
        assert await notifier.deliveries(execution.id) == []
    assert smtp_server.inbox.messages == []


# ---------------------------------------------------------------- rules


async def test_recovered_fires_once_on_the_first_success_after_failures(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["recovered"], "channel": "chat"}])
    async with engine_factory(**hook_settings(receiver)) as engine:
        assert await run(engine, job_id, Code=0) == []
        assert await run(engine, job_id, Code=1) == []
        assert await run(engine, job_id, Code=1) == []
        recovered = await run(engine, job_id, Code=0)
        assert await run(engine, job_id, Code=0) == []
    assert [(d.event, d.status) for d in recovered] == [("recovered", "sent")]
    assert len(receiver.requests) == 1
    body = json.loads(receiver.requests[0].body)
    assert body["subject"] == "[JobHost] Ops/Nightly recovered"


async def test_after_failures_waits_for_that_many_failures_in_a_row(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["failed"], "channel": "chat", "after_failures": 2}])
    async with engine_factory(**hook_settings(receiver)) as engine:
        assert await run(engine, job_id, Code=1) == []
        second = await run(engine, job_id, Code=1)
        assert await run(engine, job_id, Code=0) == []
        assert await run(engine, job_id, Code=1) == []  # the streak starts again
    assert [(d.event, d.status) for d in second] == [("failed", "sent")]
    assert len(receiver.requests) == 1


# ---------------------------------------------------------------- webhook


async def test_a_webhook_post_carries_a_valid_signature(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["succeeded"], "channel": "chat"}])
    key = "webhook-signing-key"
    async with engine_factory(**hook_settings(receiver, secret=key)) as engine:
        deliveries = await run(engine, job_id, Code=0)
    assert [d.status for d in deliveries] == ["sent"]
    request = receiver.requests[0]
    expected = "sha256=" + hmac.new(key.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-JobHost-Signature"] == expected
    assert request.headers["X-JobHost-Event"] == "succeeded"
    body = json.loads(request.body)
    assert body["event"] == "succeeded"
    assert body["job_id"] == job_id
    assert body["delivery_id"] == deliveries[0].id
    assert body["execution"]["id"] == deliveries[0].execution_id
    assert body["execution"]["exit_code"] == 0
    assert "line 25" in body["output_tail"]
    assert body["link"].endswith(f"/#/executions/{deliveries[0].execution_id}")


async def test_a_retried_run_notifies_its_final_outcome_only(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    write_job(
        apps,
        "Ops",
        "Flaky",
        {
            "Name": "Flaky",
            "template_variables": VARIABLES,
            "retry": {"attempts": 2, "backoff_seconds": 0.1},
            "notify": [
                {"on": ["failed"], "channel": "chat"},
                {"on": ["retrying"], "channel": "chat"},
            ],
        },
        script_text=SCRIPT,
    )
    async with engine_factory(**hook_settings(receiver)) as engine:
        changes = engine.changes()
        first = await engine.start("Ops/Flaky", {"Code": 3})
        async for change in changes:
            if change.retry_of == first.id and change.status.terminal:
                break
        notifier = notifier_of(engine)
        await notifier.flush()
        retrying = await notifier.wait_for(first.id, settled)
        final = await notifier.wait_for(change.id, settled)
    assert [(d.event, d.rule_index) for d in retrying] == [("retrying", 1)]
    assert [(d.event, d.rule_index) for d in final] == [("failed", 0)]
    assert sorted(r.headers["X-JobHost-Event"] for r in receiver.requests) == [
        "failed",
        "retrying",
    ]


async def test_a_failing_receiver_is_retried_then_recorded_as_failed(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    receiver.status = 500
    job_id = write_notifying_job(apps, [{"on": ["failed"], "channel": "chat"}])
    async with engine_factory(**hook_settings(receiver, retries=3)) as engine:
        deliveries = await run(engine, job_id, Code=1)
    [delivery] = deliveries
    assert delivery.status == "failed"
    assert delivery.attempts == 3
    assert delivery.last_error == f"POST {receiver.url}: HTTP 500 receiver says no"
    assert len(receiver.requests) == 3


async def test_pending_deliveries_survive_a_restart(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver
) -> None:
    receiver.stop()  # nothing listens on its port now
    job_id = write_notifying_job(apps, [{"on": ["failed"], "channel": "chat"}])
    settings = hook_settings(receiver, retries=50, backoff_seconds=0.2)
    async with engine_factory(**settings) as engine:
        execution = await engine.wait((await engine.start(job_id, {"Code": 1})).id)
        notifier = notifier_of(engine)
        await notifier.flush()
        [pending] = await notifier.wait_for(
            execution.id, lambda found: bool(found) and found[0].attempts >= 1
        )
    assert pending.status == "pending"
    assert "POST http://127.0.0.1" in (pending.last_error or "")
    receiver.start()  # the same port, up again
    async with engine_factory(**settings) as engine:
        [sent] = await notifier_of(engine).wait_for(execution.id, settled)
    assert sent.status == "sent"
    assert sent.attempts >= 2
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0].body)["execution"]["id"] == execution.id


async def test_a_rule_naming_an_unknown_channel_is_recorded_as_failed(
    apps: Path, engine_factory: EngineFactory, receiver: Receiver, caplog: Any
) -> None:
    job_id = write_notifying_job(apps, [{"on": ["failed"], "channel": "pager"}])
    with caplog.at_level(logging.WARNING, logger="jobhost.notify.notifier"):
        async with engine_factory(**hook_settings(receiver)) as engine:
            deliveries = await run(engine, job_id, Code=1)
    assert [(d.status, d.attempts) for d in deliveries] == [("failed", 0)]
    message = (
        "notify[0].channel: no channel 'pager' is configured on this host (channels: chat); "
        "the rule is ignored until one is"
    )
    assert deliveries[0].last_error == message
    assert f"Ops/Nightly: {message}" in caplog.text


# ---------------------------------------------------------------- API


async def test_the_api_lists_an_executions_deliveries(tmp_path: Path, receiver: Receiver) -> None:
    settings = make_settings(tmp_path, **hook_settings(receiver))
    job_id = write_notifying_job(tmp_path / "apps", [{"on": ["failed"], "channel": "chat"}])
    async for harness in running_harness(settings):
        execution = await harness.wait((await harness.engine.start(job_id, {"Code": 1})).id)
        await notifier_of(harness.engine).flush()
        await notifier_of(harness.engine).wait_for(execution.id, settled)
        admin = await harness.admin()
        response = await admin.get(f"/api/v1/jobs/status/{execution.id}/notifications")
        assert response.status_code == 200, response.text
        [delivery] = response.json()["deliveries"]
        assert delivery["execution_id"] == execution.id
        assert delivery["channel"] == "chat"
        assert delivery["recipient"] == receiver.url
        assert delivery["status"] == "sent"
        assert delivery["attempts"] == 1
        missing = await admin.get("/api/v1/jobs/status/nope/notifications")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "No execution 'nope'"


# ---------------------------------------------------------------- validation


def test_a_bad_rule_makes_the_job_invalid_with_a_precise_message() -> None:
    data = {
        "ScriptRelativePath": "run.py",
        "notify": [
            {"on": ["fail"], "channel": "ops"},
            {"on": ["failed"], "channel": "ops", "after_failures": 0, "cc": "x"},
        ],
    }
    definition, errors, _ = load_definition(data, "apps/X/jobs/Y/job.json")
    assert definition is None
    assert errors == [
        "apps/X/jobs/Y/job.json: notify[0].on: 'fail' is not one of failed, timed_out, lost, "
        "succeeded, recovered, missed, retrying",
        "apps/X/jobs/Y/job.json: notify[1].after_failures must be at least 1, got 0",
        "apps/X/jobs/Y/job.json: notify[1].cc is not a known field "
        "(on, channel, to, after_failures, attach_result)",
    ]


def test_bad_channel_configuration_is_refused_at_start_with_every_problem() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_channels(
            {
                "sms": {"type": "sms"},
                "hook": {"type": "webhook", "url": "ftp://example.com"},
                "mail": {"type": "email", "retries": 0},
            }
        )
    assert str(caught.value) == (
        "Invalid notification channels: channels.sms.type must be 'email' or 'webhook', "
        "got 'sms'; channels.hook.url must be an http:// or https:// URL, got "
        "'ftp://example.com'; channels.mail.retries: Input should be greater than or equal "
        "to 1, got 0"
    )

"""Reports/JobReport over real history made through a real engine, mailed for real."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobhost.engine import JobHost
from jobhost.models import Execution, ExecutionStatus, Trigger, utcnow
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job
from tests.notifyfixtures import SmtpServer
from tests.test_notify import notifier_of, settled

REPORT_FOLDER = Path(__file__).resolve().parent.parent / "apps" / "Reports" / "jobs" / "JobReport"
EXIT_WITH = "import os, sys\nprint('working')\nsys.exit(int(os.environ['JOBHOST_VAR_Code']))\n"
EVIL = "<script>alert('x')</script>"


def install(apps: Path) -> None:
    shutil.copytree(REPORT_FOLDER, apps / "Reports" / "jobs" / "JobReport")
    write_job(
        apps,
        "Lab",
        "Flaky",
        {"Name": "Flaky", "template_variables": {"Code": {"type": "integer", "default": 0}}},
        script_text=EXIT_WITH,
    )


async def make_history(engine: JobHost) -> None:
    """Lab/Flaky: two successes and one failure; plus a stored run whose job ID and error
    hold markup (history can hold anything an older version or a restore wrote)."""
    for code in (0, 1, 0):
        await engine.wait((await engine.start("Lab/Flaky", {"Code": code})).id)
    now = utcnow()
    odd = Execution(
        id="f" * 32,
        job_id=f"Odd/{EVIL}",
        status=ExecutionStatus.FAILED,
        trigger=Trigger.USER,
        user="mallory",
        created_at=now - timedelta(minutes=5),
        started_at=now - timedelta(minutes=5),
        ended_at=now - timedelta(minutes=4),
        exit_code=2,
        error=f"broke on {EVIL}",
    )
    await engine.journal.call(engine.store.save_executions, [odd])


def mailing_to_the_team(smtp_server: SmtpServer) -> dict[str, Any]:
    """Settings whose ``reports`` channel mails team@example.com through ``smtp_server``."""
    return {
        "notifications_enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_server.port,
        "channels": {"reports": {"type": "email", "to": ["team@example.com"]}},
    }


async def test_the_report_counts_each_job_escapes_text_and_is_mailed(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    install(apps)
    async with engine_factory(**mailing_to_the_team(smtp_server)) as engine:
        await make_history(engine)
        execution = await engine.wait((await engine.start("Reports/JobReport")).id)
        assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
        notifier = notifier_of(engine)
        await notifier.flush()
        [delivery] = await notifier.wait_for(execution.id, settled)
    result = execution.result
    assert result["jobs"] == 2
    assert result["executions"] == 4
    report = Path(result["report"])
    assert result["attachments"] == [str(report)]
    assert report.name.startswith("report-")
    assert report.suffix == ".html"
    text = report.read_text(encoding="utf-8")
    assert (
        '<tr><td class="job">Lab/Flaky</td><td class="runs">3</td>'
        '<td class="failures">1</td><td class="rate">66.7%</td>'
    ) in text
    assert '<td class="job">Odd/&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</td>' in text
    assert "broke on &lt;script&gt;" in text
    assert "<script>" not in text
    assert "<svg" in text
    assert "<rect" in text
    assert "<strong>4</strong> runs of <strong>2</strong> jobs" in text

    assert delivery.status == "sent"
    [message] = smtp_server.inbox.messages
    assert message["Subject"] == "[JobHost] Reports/JobReport succeeded"
    assert message["To"] == "team@example.com"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == report.name
    assert attachment.get_content_type() == "text/html"
    assert attachment.get_content() == text


async def test_a_test_run_writes_the_report_and_sends_nothing(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer
) -> None:
    install(apps)
    async with engine_factory(**mailing_to_the_team(smtp_server)) as engine:
        await make_history(engine)
        execution = await engine.wait(
            (await engine.test("Reports/JobReport", {"Period": "week"})).id
        )
        output = (await engine.read_output(execution.id)).data.decode()
        await notifier_of(engine).flush()
        assert await notifier_of(engine).deliveries(execution.id) == []
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    path = Path(output.strip().splitlines()[-1])
    assert path.name.endswith("-test.html")
    assert "JobHost report: last week" in path.read_text(encoding="utf-8")
    assert smtp_server.inbox.messages == []


async def test_attachments_outside_the_state_dir_are_never_sent(
    apps: Path, engine_factory: EngineFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    outside = tmp_path / "passwd.txt"
    outside.write_text("root:x:0:0", encoding="utf-8")
    script = (
        "from jobhost.job import context, set_result\n"
        "inside = context.state_dir / 'ok.txt'\n"
        "inside.write_text('fine')\n"
        f"set_result({{'attachments': [str(inside), {str(outside)!r}, '../../../x']}})\n"
    )
    write_job(
        apps,
        "Lab",
        "Leaky",
        {
            "Name": "Leaky",
            "notify": [{"on": ["succeeded"], "channel": "reports", "attach_result": True}],
        },
        script_text=script,
    )
    async with engine_factory(**mailing_to_the_team(smtp_server)) as engine:
        execution = await engine.wait((await engine.start("Lab/Leaky")).id)
        await notifier_of(engine).flush()
        await notifier_of(engine).wait_for(execution.id, settled)
    [message] = smtp_server.inbox.messages
    assert [a.get_filename() for a in message.iter_attachments()] == ["ok.txt"]

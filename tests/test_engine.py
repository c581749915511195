"""The engine end to end: real job folders, real processes, a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psutil
import pytest

from jobhost.errors import (
    Conflict,
    ExecutionNotFound,
    InitHookFailed,
    JobNotFound,
    PermissionDenied,
    VariableError,
)
from jobhost.models import ExecutionStatus, HistoryQuery, Principal, Trigger
from tests.enginefixtures import EngineFactory
from tests.jobfolders import write_job

ECHO = """
import json, os, sys
print("args", sys.argv[1:])
print("word", os.environ.get("JOBHOST_VAR_Word"))
with open(os.environ["JOBHOST_RESULT_PATH"], "w") as fh:
    json.dump({"word": os.environ.get("JOBHOST_VAR_Word"), "test": os.environ["JOBHOST_TEST"]}, fh)
"""
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"
FAIL = "import sys\nprint('bad thing', flush=True)\nsys.exit(3)\n"

ALICE = Principal("alice", frozenset({"operator"}))
BOB = Principal("bob", frozenset({"viewer"}))


def echo_job(apps: Path, **extra: object) -> None:
    write_job(
        apps,
        "Demo",
        "Echo",
        {
            "Name": "Echo {{Word}}",
            "Description": "Echoes",
            "argumentlist": ["--word", "{{Word}}"],
            "template_variables": {"Word": {"description": "w", "default": "hi"}},
            **extra,
        },
        script_text=ECHO,
    )


async def test_start_runs_the_script_and_records_everything(
    apps: Path, engine_factory: EngineFactory
) -> None:
    echo_job(apps)
    hostile = '"; rm -rf / #}}{{Word}} $(id)\nline2'
    async with engine_factory() as engine:
        started = await engine.start("Demo/Echo", {"Word": hostile}, ALICE)
        final = await engine.wait(started.id)
        output = (await engine.read_output(started.id)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    assert final.exit_code == 0
    assert final.result == {"word": hostile, "test": "0"}
    assert final.user == "alice"
    assert final.trigger is Trigger.USER
    assert final.cpu_seconds is not None
    assert final.cpu_seconds > 0
    assert final.peak_rss_bytes is not None
    assert final.peak_rss_bytes > 0
    assert f"args ['--word', {hostile!r}]" in output
    async with engine_factory() as engine:  # durable: a new engine reads the same record
        again = await engine.status(started.id)
    assert again.status is ExecutionStatus.SUCCEEDED
    assert again.result == final.result


async def test_failure_and_test_mode(apps: Path, engine_factory: EngineFactory) -> None:
    echo_job(apps)
    write_job(apps, "Demo", "Fail", {"Name": "Fail"}, script_text=FAIL)
    async with engine_factory() as engine:
        failed = await engine.wait((await engine.start("Demo/Fail")).id)
        tested = await engine.wait((await engine.test("Demo/Echo", {"Word": "x"})).id)
        out = (await engine.read_output(tested.id)).data.decode()
    assert failed.status is ExecutionStatus.FAILED
    assert failed.exit_code == 3
    assert tested.test is True
    assert tested.result == {"word": "x", "test": "1"}
    assert "--test" in out


async def test_variables_are_checked_before_anything_runs(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(
        apps,
        "Demo",
        "Typed",
        {
            "Name": "Typed",
            "template_variables": {
                "Count": {"type": "integer", "min": 1, "max": 10},
                "Mode": {"choices": ["fast", "slow"], "default": "fast"},
            },
        },
    )
    async with engine_factory() as engine:
        with pytest.raises(VariableError) as info:
            await engine.start("Demo/Typed", {"Count": "99", "Mood": "x"})
        page = await engine.history(HistoryQuery())
    assert "Count" in info.value.message
    assert "Mood" in info.value.message
    assert page.items == []  # nothing was recorded for a rejected start


async def test_init_hook_sets_defaults_and_rejects(
    apps: Path, engine_factory: EngineFactory
) -> None:
    init = (
        "import json, sys\n"
        "v = json.load(sys.stdin)\n"
        "v.setdefault('Word', 'from-init')\n"
        "if v['Word'] == 'no':\n"
        "    print('noise', file=sys.stderr)\n"
        "    print('Word may not be no', file=sys.stderr)\n"
        "    sys.exit(1)\n"
        "print(json.dumps(v))\n"
    )
    write_job(
        apps,
        "Demo",
        "Init",
        {"Name": "Init", "template_variables": {"Word": "the word"}},
        script_text=ECHO,
        init=("init-job.py", init),
    )
    async with engine_factory() as engine:
        ok = await engine.wait((await engine.start("Demo/Init")).id)
        with pytest.raises(InitHookFailed, match="Word may not be no"):
            await engine.start("Demo/Init", {"Word": "no"})
    assert ok.result["word"] == "from-init"


async def test_secret_variables_are_redacted(apps: Path, engine_factory: EngineFactory) -> None:
    write_job(
        apps,
        "Demo",
        "Secret",
        {"Name": "Secret", "template_variables": {"Word": {"secret": True}}},
        script_text=ECHO,
    )
    async with engine_factory() as engine:
        started = await engine.start("Demo/Secret", {"Word": "hunter2"})
        final = await engine.wait(started.id)
        audit = await engine.audit_log(__import__("jobhost.models").models.AuditQuery())
    assert final.variables == {"Word": "***"}
    # The script got the real value (it wrote it as its result), which is masked by value.
    assert final.result == {"word": "***", "test": "0"}
    assert "hunter2" not in json.dumps([e.to_api() for e in audit.items])


async def test_permissions_are_enforced_and_audited(
    apps: Path, engine_factory: EngineFactory
) -> None:
    echo_job(apps, roles_start=["operator"], roles_view=["operator", "viewer"])
    write_job(apps, "Ops", "Hidden", {"Name": "Hidden", "roles_view": ["ops"]})
    async with engine_factory() as engine:
        with pytest.raises(PermissionDenied, match="'bob' may not start 'Demo/Echo'"):
            await engine.start("Demo/Echo", {}, BOB)
        with pytest.raises(JobNotFound):  # not viewable: no existence leak
            await engine.start("Ops/Hidden", {}, ALICE)
        mine = await engine.start("Demo/Echo", {}, ALICE)
        await engine.wait(mine.id)
        assert [e.id for e in (await engine.history(HistoryQuery(), BOB)).items] == [mine.id]
        assert (await engine.history(HistoryQuery(), Principal("eve"))).items == []
        audit = await engine.audit_log(__import__("jobhost.models").models.AuditQuery())
    denied = [e for e in audit.items if e.outcome == "denied"]
    assert [(e.action, e.user, e.target) for e in denied] == [("job.start", "bob", "Demo/Echo")]


async def test_stop_kills_the_whole_process_group(
    apps: Path, engine_factory: EngineFactory
) -> None:
    script = (
        "import subprocess, time\n"
        "kids = [subprocess.Popen(['sleep', '600']) for _ in range(3)]\n"
        "print('pids', *[k.pid for k in kids], flush=True)\n"
        "time.sleep(600)\n"
    )
    write_job(
        apps, "Demo", "Forker", {"Name": "Forker", "stop_grace_seconds": 1}, script_text=script
    )
    async with engine_factory() as engine:
        started = await engine.start("Demo/Forker", {}, ALICE)
        seen = ""
        async for chunk in engine.follow(started.id):
            seen += chunk.data.decode()
            if "pids" in seen and seen.endswith("\n"):
                break
        pids = [int(p) for p in seen.split("pids", 1)[1].split()]
        stopping = await engine.stop(ALICE, execution_id=started.id)
        assert stopping[0].status is ExecutionStatus.STOPPING
        final = await engine.wait(started.id)
    assert final.status is ExecutionStatus.STOPPED
    assert len(pids) == 3
    assert not [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]


async def test_timeout_ends_the_run_as_timed_out(apps: Path, engine_factory: EngineFactory) -> None:
    write_job(
        apps,
        "Demo",
        "Slow",
        {"Name": "Slow", "timeout_seconds": 0.5, "stop_grace_seconds": 0.5},
        script_text=SLEEPER,
    )
    async with engine_factory() as engine:
        final = await engine.wait((await engine.start("Demo/Slow")).id)
    assert final.status is ExecutionStatus.TIMED_OUT
    assert final.error == "Timed out after 0.5 s"


async def test_conflict_policies(apps: Path, engine_factory: EngineFactory) -> None:
    write_job(apps, "Demo", "Reject", {"Name": "R", "stop_grace_seconds": 1}, script_text=SLEEPER)
    write_job(
        apps, "Demo", "Queue", {"Name": "Q", "on_conflict": "queue"}, script_text="print('q')\n"
    )
    write_job(
        apps,
        "Demo",
        "Replace",
        {"Name": "P", "on_conflict": "replace", "stop_grace_seconds": 1},
        script_text=SLEEPER,
    )
    async with engine_factory() as engine:
        first = await engine.start("Demo/Reject")
        with pytest.raises(Conflict, match="already has 1 active execution"):
            await engine.start("Demo/Reject")
        await engine.stop(job_id="Demo/Reject")

        q1 = await engine.start("Demo/Queue")
        q2 = await engine.start("Demo/Queue")
        assert q2.status is ExecutionStatus.QUEUED
        done = [await engine.wait(q1.id), await engine.wait(q2.id)]
        assert [e.status for e in done] == [ExecutionStatus.SUCCEEDED] * 2
        assert done[1].started_at is not None
        assert done[0].ended_at is not None
        assert done[1].started_at >= done[0].ended_at  # never overlapped

        old = await engine.start("Demo/Replace")
        new = await engine.start("Demo/Replace")
        assert (await engine.wait(old.id)).status is ExecutionStatus.STOPPED
        running = engine.running()
        assert [e.id for e in running if e.job_id == "Demo/Replace"] == [new.id]
        await engine.stop(job_id="Demo/Replace")
        assert (await engine.wait(first.id)).status is ExecutionStatus.STOPPED


async def test_idempotency_key_never_runs_twice(apps: Path, engine_factory: EngineFactory) -> None:
    echo_job(apps, max_concurrent=0)
    async with engine_factory() as engine:
        results = await asyncio.gather(
            *[engine.start("Demo/Echo", {}, ALICE, idempotency_key="k1") for _ in range(5)]
        )
        await engine.wait(results[0].id)
    async with engine_factory() as engine:
        later = await engine.start("Demo/Echo", {}, ALICE, idempotency_key="k1")
        page = await engine.history(HistoryQuery())
    assert {r.id for r in results} == {later.id}
    assert len(page.items) == 1


async def test_restart_policy_backs_off_and_gives_up(
    apps: Path, engine_factory: EngineFactory
) -> None:
    write_job(
        apps,
        "Demo",
        "Crash",
        {
            "Name": "Crash",
            "restart": "on-failure",
            "restart_burst": 3,
            "restart_window_seconds": 60,
        },
        script_text=FAIL,
    )
    async with engine_factory() as engine:
        changes = engine.changes()
        await engine.start("Demo/Crash")
        finished = []
        async for execution in changes:
            if execution.status.terminal:
                finished.append(execution)
                if execution.error and execution.error.startswith("Restart given up"):
                    break
        page = await engine.history(HistoryQuery(job_id="Demo/Crash"))
    assert [e.restart_count for e in reversed(page.items)] == [0, 1, 2]
    assert [e.trigger for e in reversed(page.items)] == [
        Trigger.USER,
        Trigger.RESTART,
        Trigger.RESTART,
    ]
    assert finished[-1].error == "Restart given up: 3 quick failures within 60 s"
    assert page.items[0].error == finished[-1].error


async def test_follow_streams_output_until_the_end(
    apps: Path, engine_factory: EngineFactory
) -> None:
    script = (
        "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"
    )
    write_job(apps, "Demo", "Lines", {"Name": "Lines"}, script_text=script)
    async with engine_factory() as engine:
        started = await engine.start("Demo/Lines")
        chunks = [chunk async for chunk in engine.follow(started.id)]
    text = b"".join(c.data for c in chunks).decode()
    assert text.splitlines() == [f"line {i}" for i in range(5)]
    assert chunks[-1].done


async def test_restart_action_reuses_variables(apps: Path, engine_factory: EngineFactory) -> None:
    script = SLEEPER.replace("print('sleeping'", "import os\nprint(os.environ['JOBHOST_VAR_Word']")
    write_job(
        apps,
        "Demo",
        "Daemon",
        {"Name": "D", "template_variables": {"Word": "w"}, "stop_grace_seconds": 1},
        script_text=script,
    )
    async with engine_factory() as engine:
        first = await engine.start("Demo/Daemon", {"Word": "kept"}, ALICE)
        second = await engine.restart(ALICE, job_id="Demo/Daemon")
        assert (await engine.status(first.id)).status is ExecutionStatus.STOPPED
        assert second.variables == {"Word": "kept"}
        assert second.trigger is Trigger.RESTART
        await engine.stop(ALICE, execution_id=second.id)
        await engine.wait(second.id)


async def test_prune_applies_retention_and_removes_logs(
    apps: Path, engine_factory: EngineFactory
) -> None:
    echo_job(apps, max_concurrent=0)
    async with engine_factory(retention_per_job=2) as engine:
        runs = [await engine.wait((await engine.start("Demo/Echo")).id) for _ in range(4)]
        assert (await engine.status(runs[0].id)).status is ExecutionStatus.SUCCEEDED
        deleted = await engine.prune()
        with pytest.raises(ExecutionNotFound):  # gone from the store and from memory
            await engine.status(runs[0].id)
        page = await engine.history(HistoryQuery(job_id="Demo/Echo"))
        logs = sorted(p.name for p in engine.settings.logs_dir.iterdir())
    assert set(deleted) == {runs[0].id, runs[1].id}
    assert [e.id for e in page.items] == [runs[3].id, runs[2].id]
    assert logs == sorted(f"{r.id}.log" for r in runs[2:])


async def test_a_reload_never_disturbs_a_running_execution(
    tmp_path: Path, apps: Path, engine_factory: EngineFactory
) -> None:
    gate = tmp_path / "gate"
    script = (
        "import os, time\n"
        "print('waiting', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('done', flush=True)\n"
    )
    folder = write_job(apps, "Demo", "Gate", {"Name": "Gate"}, script_text=script)
    async with engine_factory() as engine:
        started = await engine.start("Demo/Gate")
        async for chunk in engine.follow(started.id):
            if b"waiting" in chunk.data:
                break
        (folder / "job.json").write_text("{ broken")
        catalog = await engine.reload()
        assert not catalog["Demo/Gate"].valid
        assert engine.supervisor.live[started.id].status is ExecutionStatus.RUNNING
        gate.touch()
        final = await engine.wait(started.id)
        output = (await engine.read_output(started.id)).data.decode()
    assert final.status is ExecutionStatus.SUCCEEDED
    assert output.splitlines() == ["waiting", "done"]

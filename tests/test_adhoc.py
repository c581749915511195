"""Ad-hoc commands: real processes watched by pidfd, ended by their own exit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jobhost.errors import BadRequest
from jobhost.server.adhoc import AdhocRunner
from tests.test_local_executor import alive, wait_gone


async def test_a_command_whose_grandchild_keeps_its_output_open_still_completes(
    tmp_path: Path,
) -> None:
    runner = AdhocRunner(str(tmp_path))
    try:
        run = await runner.submit(
            "bg", ["sh", "-c", "sleep 600 & echo $!; echo started"], "admin", "", "BackgroundJob"
        )
        await run.done.wait()  # before: waited for the end of stdout, held by sleep
        assert run.state == "Completed"
        lines = run.output.decode().splitlines()
        assert lines[1] == "started"
        grandchild = int(lines[0])
        await wait_gone(grandchild)  # what it left in its group goes with it
        assert not alive(grandchild)
    finally:
        await runner.aclose()


async def test_exit_codes_and_the_environment_of_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBHOST_ADMIN_PASSWORD", "server-secret")
    runner = AdhocRunner(str(tmp_path))
    try:
        failed = await runner.submit("f", ["sh", "-c", "exit 3"], "u", "", "BackgroundJob")
        env = await runner.submit("e", ["env"], "u", "", "BackgroundJob")
        await asyncio.gather(failed.done.wait(), env.done.wait())
        assert (failed.state, failed.exit_code) == ("Failed", 3)
        assert b"server-secret" not in env.output  # the server's environment stays its own
        assert b"PATH=" in env.output
    finally:
        await runner.aclose()


async def test_aclose_kills_what_still_runs(tmp_path: Path) -> None:
    runner = AdhocRunner(str(tmp_path))
    run = await runner.submit("s", ["sleep", "600"], "u", "", "BackgroundJob")
    await runner.aclose()
    assert run.done.is_set()
    assert run.exit_code == -9
    assert run.pid is not None
    assert not alive(run.pid)


async def test_a_missing_program_is_a_bad_request(tmp_path: Path) -> None:
    runner = AdhocRunner(str(tmp_path))
    with pytest.raises(BadRequest) as raised:
        await runner.submit("m", ["/nonexistent/prog"], "u", "", "BackgroundJob")
    assert raised.value.message == "Cannot run '/nonexistent/prog': No such file or directory"

"""Runs outlive a real ``jobhost serve``: SIGKILL or SIGTERM the server mid-run, start the
next one on the same data dir, and read the run through the new server's API.

The run prints numbered lines for several seconds; whatever it printed while no server
was up must be in its output too, once, in order.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobfolders import write_job
from tests.serveprocess import ServeProcess, alive, end_runner, gone, job_processes

pytestmark = pytest.mark.slow

LINES = 60
# Prints a line every 0.05 s; before line 21 it waits for the file ``21`` in its Gates
# folder (made once its server is dead: lines 21-40 are printed with no server up), and
# before line 41 for ``41`` (made once the next server is up: the run is still going).
COUNT = (
    "import os, time\n"
    "gates = os.environ['JOBHOST_VAR_Gates']\n"
    f"for i in range(1, {LINES + 1}):\n"
    "    while i in (21, 41) and not os.path.exists(os.path.join(gates, str(i))):\n"
    "        time.sleep(0.02)\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(0.05)\n"
)
# A job that starts a grandchild in a session of its own (out of the job's process group),
# prints its pid, and ticks until stopped.
ESCAPER = (
    "import subprocess, time\n"
    "child = subprocess.Popen(['setsid', 'sleep', '600'])\n"
    "print(f'grandchild {child.pid}', flush=True)\n"
    "while True:\n"
    "    print('tick', flush=True)\n"
    "    time.sleep(0.2)\n"
)


def expected(count: int = LINES) -> str:
    return "".join(f"line {i}\n" for i in range(1, count + 1))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    apps = tmp_path / "apps"
    count = {"Name": "Count", "Description": "counts", "template_variables": {"Gates": "folder"}}
    write_job(apps, "Lab", "Count", count, script_text=COUNT)
    write_job(
        apps, "Lab", "Escaper", {"Name": "Escaper", "Description": "setsid"}, script_text=ESCAPER
    )
    data_dir = tmp_path / "data"
    yield apps, data_dir
    end_runner(data_dir)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_run_survives_its_server_and_the_next_server_serves_all_of_its_output(
    site: tuple[Path, Path], signum: int
) -> None:
    apps, data_dir = site
    gates = data_dir.parent / "gates"
    gates.mkdir()
    first = ServeProcess(apps, data_dir)
    try:
        execution_id = first.start("Lab/Count", {"Gates": str(gates)})
        first.wait_output(execution_id, "line 3\n")
        pid = first.status(execution_id)["pid"]
    finally:
        code = first.kill(signum)
    assert code in (0, -signum)
    assert alive(pid), "the job died with its server"
    (gates / "21").touch()  # lines 21-40 are printed while no server is up
    second = ServeProcess(apps, data_dir)
    try:
        assert second.status(execution_id)["status"] == "running"  # re-adopted, not lost
        (gates / "41").touch()
        ended = second.wait_end(execution_id)
        assert (ended["status"], ended["exit_code"], ended["exit_signal"]) == ("succeeded", 0, None)
        assert ended["error"] is None
        assert ended["cpu_seconds"] is not None
        assert ended["peak_rss_bytes"]
        output = second.output(execution_id)
        assert output == expected()  # every line once, in order, none lost while no server ran
        assert ended["output_bytes"] == len(expected())
    finally:
        assert second.kill(signal.SIGTERM) == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("isolation", ["default", "rlimits"])
def test_a_stop_after_readoption_ends_the_whole_group_and_a_setsid_grandchild(
    site: tuple[Path, Path], isolation: str
) -> None:
    apps, data_dir = site
    env = {"JOBHOST_ISOLATION": isolation} if isolation != "default" else {}
    first = ServeProcess(apps, data_dir, env=env)
    try:
        execution_id = first.start("Lab/Escaper")
        first.wait_output(execution_id, "tick\n")
        pid = first.status(execution_id)["pid"]
        grandchild = int(first.output(execution_id).split()[1])
    finally:
        first.kill(signal.SIGKILL)
    assert alive(pid)
    assert alive(grandchild)
    second = ServeProcess(apps, data_dir, env=env)
    try:
        assert second.status(execution_id)["status"] == "running"
        second.stop(execution_id)
        ended = second.wait_end(execution_id)
        assert ended["status"] == "stopped"
        assert ended["exit_signal"] == signal.SIGTERM
        assert gone(pid)
        assert gone(grandchild), "the setsid grandchild outlived the stop"
        assert execution_id not in job_processes(data_dir)
    finally:
        second.kill(signal.SIGTERM)

"""The init-job hook, run for real: replace, keep, reject, time out, bound its output."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from jobhost.catalog.discovery import Job, scan
from jobhost.errors import InitHookFailed
from jobhost.execution.init_hook import MAX_CAPTURE_BYTES, run_init_hook
from tests.jobfolders import write_job
from tests.test_local_executor import wait_gone

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def job_with_init(tmp_path: Path, body: str, name: str = "init-job.py") -> Job:
    write_job(tmp_path / "apps", "App", "Hooked", init=(name, body))
    job = scan([tmp_path / "apps"])["App/Hooked"]
    assert job.valid, job.errors
    return job


async def run(job: Job, variables: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    return await run_init_hook(job, variables, timeout=timeout, env=ENV)


async def test_no_init_script_keeps_the_variables(tmp_path: Path) -> None:
    write_job(tmp_path / "apps", "App", "Plain")
    job = scan([tmp_path / "apps"])["App/Plain"]
    assert await run(job, {"A": 1}) == {"A": 1}


async def test_stdout_object_replaces_the_variables(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path,
        "import json, os, sys\n"
        "proposed = json.load(sys.stdin)\n"
        "from_env = json.loads(os.environ['JOBHOST_VARIABLES'])\n"
        "assert proposed == from_env\n"
        "print(json.dumps({'Interval': proposed.get('Interval', 60) * 2,\n"
        "                  'cwd': os.path.basename(os.getcwd()),\n"
        "                  'job': os.environ['JOBHOST_JOB_ID']}))\n",
    )
    assert await run(job, {"Interval": 5, "Dropped": "x"}) == {
        "Interval": 10,
        "cwd": "Hooked",
        "job": "App/Hooked",
    }


async def test_empty_stdout_keeps_the_variables(tmp_path: Path) -> None:
    job = job_with_init(tmp_path, "import sys\nsys.stderr.write('just checking\\n')\n")
    assert await run(job, {"A": "b"}) == {"A": "b"}


async def test_hook_that_ignores_stdin(tmp_path: Path) -> None:
    job = job_with_init(tmp_path, "print('{\"A\": 2}')\n")
    assert await run(job, {"Big": "x" * 2_000_000}) == {"A": 2}


async def test_nonzero_exit_reports_the_last_stderr_line(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path,
        "import sys\n"
        "print('Traceback-ish noise', file=sys.stderr)\n"
        "print('Interval must be at least 10 seconds', file=sys.stderr)\n"
        "print('   ', file=sys.stderr)\n"
        "sys.exit(3)\n",
    )
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {"Interval": 1})
    assert caught.value.message == "Interval must be at least 10 seconds"
    assert caught.value.status_code == 422


async def test_nonzero_exit_without_stderr(tmp_path: Path) -> None:
    job = job_with_init(tmp_path, "raise SystemExit(4)\n")
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {})
    assert caught.value.message == "init-job.py exited with code 4"


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (
            "[1, 2]",
            "init-job.py must print a JSON object of variables on stdout (or nothing), got list",
        ),
        (
            "null",
            "init-job.py must print a JSON object of variables on stdout (or nothing), got null",
        ),
        (
            "Interval=5",
            "init-job.py printed invalid JSON on stdout (Expecting value at line 1 "
            "column 1); it must print a JSON object of variables, or nothing",
        ),
    ],
)
async def test_stdout_must_be_a_json_object(tmp_path: Path, stdout: str, message: str) -> None:
    job = job_with_init(tmp_path, f"print({stdout!r})\n")
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {})
    assert caught.value.message == message


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    job = job_with_init(
        tmp_path,
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n",
    )
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {}, timeout=1)
    assert caught.value.message == "init-job.py did not finish within 1 s"
    grandchild = int(pid_file.read_text())
    # The grandchild was in the hook's process group, so it was killed too. A SIGKILLed
    # process can still show as running for a moment on a busy machine: await its exit.
    await asyncio.wait_for(wait_gone(grandchild), 60)


async def test_flooding_stdout_is_bounded(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path,
        f"import sys\nsys.stdout.write('x' * {MAX_CAPTURE_BYTES * 3})\n",
    )
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {})
    assert caught.value.message == (
        f"init-job.py printed more than {MAX_CAPTURE_BYTES} bytes on stdout; "
        "it must print only a JSON object of variables"
    )


async def test_flooding_stderr_keeps_the_tail(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path,
        "import sys\n"
        f"sys.stderr.write('noise\\n' * {MAX_CAPTURE_BYTES // 2})\n"
        "sys.stderr.write('the real reason\\n')\n"
        "sys.exit(1)\n",
    )
    with pytest.raises(InitHookFailed) as caught:
        await run(job, {})
    assert caught.value.message == "the real reason"


async def test_shell_init_script(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path,
        "read -r proposed\n"
        'if [ -z "$JOBHOST_VARIABLES" ]; then echo "no variables" >&2; exit 1; fi\n'
        'echo "{\\"Seen\\": $proposed}"\n',
        name="init-job.sh",
    )
    assert job.init_script is not None
    assert job.init_script.name == "init-job.sh"
    assert await run(job, {"A": 'quote " and $HOME'}) == {"Seen": {"A": 'quote " and $HOME'}}


async def test_shell_init_script_rejecting(tmp_path: Path) -> None:
    job = job_with_init(
        tmp_path, 'echo "Region must be one of eu, us" >&2\nexit 2\n', name="init-job.sh"
    )
    with pytest.raises(InitHookFailed, match=r"^Region must be one of eu, us$"):
        await run(job, {"Region": "mars"})


async def test_variables_reach_the_hook_unchanged(tmp_path: Path) -> None:
    job = job_with_init(tmp_path, "import sys\nsys.stdout.write(sys.stdin.read())\n")
    hostile = {"Text": '", "roles_start": [] }}{{ \n ☃', "N": 5, "B": True}
    assert await run(job, hostile) == json.loads(json.dumps(hostile))


async def test_a_hook_whose_grandchild_keeps_stdout_open_is_over_when_it_exits(
    tmp_path: Path,
) -> None:
    """Before: the hook was read until the end of its pipes, which a background child held
    open, so the start failed with the timeout instead of going on."""
    job = job_with_init(
        tmp_path,
        'sleep 600 &\necho "$!" > "$PWD/grandchild.pid"\necho \'{"Done": true}\'\n',
        name="init-job.sh",
    )
    assert await run(job, {}, timeout=60) == {"Done": True}
    grandchild = int((job.folder / "grandchild.pid").read_text())
    await wait_gone(grandchild)  # what the hook left in its group is killed

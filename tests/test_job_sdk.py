"""The job SDK, as scripts use it: context, results and progress, under the real executor."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobhost.executors.local import LocalExecutor
from jobhost.job import JobContext
from jobhost.models import ExitInfo, LaunchSpec

REPO = str(Path(__file__).resolve().parents[1])


class Recorder:
    """ExecutionEvents that keeps progress and lets a test await the exit."""

    def __init__(self) -> None:
        self.progress: list[tuple[float | None, str | None]] = []
        self.exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

    def on_started(self, execution_id: str, pid: int | None, host: str) -> None:
        pass

    def on_output(self, execution_id: str, total_bytes: int) -> None:
        pass

    def on_progress(self, execution_id: str, fraction: float | None, message: str | None) -> None:
        self.progress.append((fraction, message))

    def on_exited(self, execution_id: str, info: ExitInfo) -> None:
        self.exited.set_result(info)


def contract_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": REPO,
        "JOBHOST_EXECUTION_ID": "abc123",
        "JOBHOST_JOB_ID": "Shop/Report",
        "JOBHOST_USER": "alice",
        "JOBHOST_ROLES": "ops,admin",
        "JOBHOST_TEST": "1",
        "JOBHOST_VARIABLES": json.dumps({"Count": 3, "Region": "eu"}),
        "JOBHOST_VAR_Count": "3",
        "JOBHOST_VAR_Region": "eu",
        "JOBHOST_RESULT_PATH": str(tmp_path / "result.json"),
        "JOBHOST_STATE_DIR": str(tmp_path / "state"),
    }


async def run_script(tmp_path: Path, source: str, env: dict[str, str]) -> tuple[Recorder, str]:
    script = tmp_path / "job.py"
    script.write_text(source)
    recorder = Recorder()
    executor = LocalExecutor(recorder)
    spec = LaunchSpec(
        execution_id="abc123",
        job_id="Shop/Report",
        argv=[sys.executable, str(script)],
        cwd=str(tmp_path),
        env=env,
        log_path=str(tmp_path / "out.log"),
        result_path=str(tmp_path / "result.json"),
    )
    await executor.start(spec)
    info = await recorder.exited
    await executor.aclose()
    output = Path(spec.log_path).read_text()
    assert info.exit_code == 0, output
    return recorder, output


SCRIPT = """
from jobhost.job import context, progress, set_result

progress(0, "starting")
progress(0.5, "half way")
progress(5)
set_result({
    "execution_id": context.execution_id,
    "job_id": context.job_id,
    "user": context.user,
    "roles": list(context.roles),
    "test": context.test,
    "variables": context.variables,
    "state_dir": str(context.state_dir),
})
print("done")
"""


async def test_a_script_reports_progress_and_a_result(tmp_path: Path) -> None:
    recorder, output = await run_script(tmp_path, SCRIPT, contract_env(tmp_path))

    assert output == "done\n"
    assert recorder.progress == [(0.0, "starting"), (0.5, "half way"), (1.0, None)]
    assert json.loads((tmp_path / "result.json").read_text()) == {
        "execution_id": "abc123",
        "job_id": "Shop/Report",
        "user": "alice",
        "roles": ["ops", "admin"],
        "test": True,
        "variables": {"Count": 3, "Region": "eu"},
        "state_dir": str(tmp_path / "state"),
    }
    assert list(tmp_path.glob("result.json.*")) == []  # no temp file left behind


def test_a_script_run_by_hand_works_without_jobhost(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "done\n"
    assert done.stderr == (
        "jobhost: JOBHOST_RESULT_PATH is not set, so the result is not saved (run under JobHost)\n"
    )


def test_the_sdk_imports_only_the_standard_library() -> None:
    code = (
        "import sys, jobhost.job\n"
        "heavy = ('pydantic', 'fastapi', 'sqlalchemy', 'psutil', 'starlette')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "[]\n"


def test_context_defaults_outside_jobhost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    context = JobContext.from_environ({})
    assert context == JobContext(state_dir=tmp_path)
    assert context.roles == ()
    assert context.test is False
    assert context.variables == {}
    assert context.result_path is None


def test_context_reads_variables_from_the_single_variables_when_no_json() -> None:
    env: dict[str, Any] = {"JOBHOST_VAR_Name": "x", "JOBHOST_VAR_Other": "y", "JOBHOST_ROLES": ""}
    context = JobContext.from_environ(env)
    assert context.variables == {"Name": "x", "Other": "y"}
    assert context.roles == ()


def test_context_keeps_typed_json_values_over_the_string_copies(tmp_path: Path) -> None:
    context = JobContext.from_environ(contract_env(tmp_path))
    assert context.variables == {"Count": 3, "Region": "eu"}
    assert context.result_path == tmp_path / "result.json"
    assert context.roles == ("ops", "admin")


def test_context_is_frozen(tmp_path: Path) -> None:
    context = JobContext.from_environ(contract_env(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'user'"):
        context.user = "mallory"  # type: ignore[misc]


def test_a_result_that_is_not_json_fails_the_script_clearly(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("from jobhost.job import set_result\nset_result({1, 2})\n")
    done = subprocess.run(
        [sys.executable, str(script)],
        env=contract_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "TypeError: Object of type set is not JSON serializable" in done.stderr
    assert not (tmp_path / "result.json").exists()


INIT_SCRIPT = """\
import sys
from jobhost.job import check_variables

def problem_of(variables):
    if variables.get("Size") == "huge":
        raise ValueError("Size must be small or large, got 'huge'")
    variables["Size"] = str(variables.get("Size", "small")).lower()
    return "Size is empty" if not variables["Size"] else None

sys.exit(check_variables(problem_of))
"""


@pytest.mark.parametrize(
    ("proposed", "code", "stdout", "stderr"),
    [
        ('{"Size": "LARGE"}', 0, {"Size": "large"}, ""),
        ("", 0, {"Size": "small"}, ""),
        ('{"Size": "huge"}', 1, None, "Size must be small or large, got 'huge'\n"),
        ('{"Size": ""}', 1, None, "Size is empty\n"),
    ],
)
def test_check_variables_speaks_the_init_script_contract(
    tmp_path: Path, proposed: str, code: int, stdout: dict[str, str] | None, stderr: str
) -> None:
    script = tmp_path / "init-job.py"
    script.write_text(INIT_SCRIPT)
    ran = subprocess.run(
        [sys.executable, str(script)],
        input=proposed,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        check=False,
    )
    assert (ran.returncode, ran.stderr) == (code, stderr)
    assert (json.loads(ran.stdout) if ran.stdout else None) == stdout

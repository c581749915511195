"""Run the example job folders under ``apps/`` the way the engine does.

The helpers follow the job script contract of DESIGN.md ("init-job script",
"The job script contract"): defaults from ``template_variables``, the init-job
script fed the proposed variables on stdin, ``{{Name}}`` substituted in the
parsed ``argumentlist`` and ``env`` values, the ``JOBHOST_*`` environment, a
result file and a state folder, and the script started in its own process group
with the host's Python. Nothing is mocked: every script runs as a real process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "apps"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def job_folder(job_id: str) -> Path:
    """``"Demo/Hello"`` → ``apps/Demo/jobs/Hello``."""
    app, job = job_id.split("/")
    return APPS / app / "jobs" / job


def job_id_of(folder: Path) -> str:
    return f"{folder.parent.parent.name}/{folder.name}"


def load_definition(folder: Path) -> dict[str, Any]:
    definition: dict[str, Any] = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    return definition


def with_defaults(folder: Path, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The proposed variables plus the declared defaults of those not given."""
    merged: dict[str, Any] = {}
    for name, spec in load_definition(folder).get("template_variables", {}).items():
        if isinstance(spec, dict) and "default" in spec:
            merged[name] = spec["default"]
    merged.update(variables)
    return merged


def as_text(value: Any) -> str:
    """How a variable value reads as a string (argv, ``JOBHOST_VAR_*``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def substitute(text: str, variables: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda match: as_text(variables[match.group(1)]), text)


@dataclass(frozen=True)
class InitOutcome:
    """What the init-job script decided: the final variables, or the user's message."""

    returncode: int
    variables: dict[str, Any]
    message: str  # the last stderr line: what the user sees on a rejection


class InitRejected(Exception):
    """The init-job script refused the start."""


def run_init(folder: Path, variables: Mapping[str, Any]) -> InitOutcome:
    """Run ``init-job.py`` (if the job has one) with the proposed variables on stdin."""
    proposed = with_defaults(folder, variables)
    script = folder / "init-job.py"
    if not script.exists():
        return InitOutcome(0, proposed, "")
    payload = json.dumps(proposed)
    env = base_env() | {"JOBHOST_VARIABLES": payload}
    done = subprocess.run(
        [sys.executable, str(script)],
        input=payload,
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=10,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    message = lines[-1] if lines else ""
    final = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else proposed
    return InitOutcome(done.returncode, final, message)


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOST_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def job_env(
    folder: Path,
    variables: Mapping[str, Any],
    *,
    test: bool,
    result_path: Path,
    state_dir: Path,
) -> dict[str, str]:
    """The environment the engine gives a job script."""
    env = base_env()
    env |= {
        "JOBHOST_EXECUTION_ID": uuid.uuid4().hex,
        "JOBHOST_JOB_ID": job_id_of(folder),
        "JOBHOST_USER": "tester",
        "JOBHOST_ROLES": "admin,operator",
        "JOBHOST_TEST": "1" if test else "0",
        "JOBHOST_VARIABLES": json.dumps(dict(variables)),
        "JOBHOST_RESULT_PATH": str(result_path),
        "JOBHOST_STATE_DIR": str(state_dir),
    }
    for name, value in variables.items():
        env[f"JOBHOST_VAR_{name}"] = as_text(value)
    for name, value in load_definition(folder).get("env", {}).items():
        env[name] = substitute(value, variables)
    return env


def job_argv(folder: Path, variables: Mapping[str, Any], *, test: bool) -> list[str]:
    definition = load_definition(folder)
    argv = [sys.executable, str(folder / definition["ScriptRelativePath"])]
    argv += [substitute(item, variables) for item in definition.get("argumentlist", [])]
    if test:
        argv.append("--test")
    return argv


@dataclass(frozen=True)
class CompletedRun:
    """One finished run: exit code, captured output and the parsed result (or None)."""

    returncode: int
    stdout: str
    stderr: str
    result: Any
    progress: list[dict[str, Any]] = field(default_factory=list)  # JOBHOST_CONTROL_FD lines

    @property
    def lines(self) -> list[str]:
        return self.stdout.strip().splitlines()

    @property
    def last_line(self) -> str:
        lines = self.lines
        return lines[-1] if lines else ""


@dataclass
class RunningJob:
    """A started job process; ``stop()`` sends SIGTERM as the engine's stop does."""

    process: subprocess.Popen[str]
    result_path: Path
    state_dir: Path
    scratch: Path
    owns_state: bool
    control: int  # read end of the progress channel
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def read_line(self) -> str:
        """The next stdout line (blocks until the job prints one; the test timeout bounds it)."""
        line = self.stdout.readline()
        if line:
            self.stdout_lines.append(line)
        return line

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)

    def finish(self, timeout: float = 30) -> CompletedRun:
        """Wait for the exit and collect output and result; kill the group if it hangs."""
        try:
            rest, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            rest, stderr = self.process.communicate()
            raise
        finally:
            result = read_result(self.result_path)
            updates = read_progress(self.control)
            shutil.rmtree(self.scratch, ignore_errors=True)
            if self.owns_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)
        stdout = "".join(self.stdout_lines) + rest
        return CompletedRun(self.process.returncode, stdout, stderr, result, updates)


def read_progress(fd: int) -> list[dict[str, Any]]:
    """Everything the job wrote on its control channel (the job has exited: EOF comes)."""
    with os.fdopen(fd, "rb") as channel:
        data = channel.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_result(path: Path) -> Any:
    if not path.exists() or path.stat().st_size == 0:
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def start_job(
    folder: Path,
    variables: Mapping[str, Any],
    *,
    test: bool = False,
    state_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> RunningJob:
    """Apply defaults and the init-job script, then start the script in its own group."""
    outcome = run_init(folder, variables)
    if outcome.returncode != 0:
        raise InitRejected(outcome.message)
    final = outcome.variables
    scratch = Path(tempfile.mkdtemp(prefix="jobhost-run-"))
    owns_state = state_dir is None
    state = state_dir if state_dir is not None else scratch / "state"
    state.mkdir(parents=True, exist_ok=True)
    result_path = scratch / "result.json"
    env = job_env(folder, final, test=test, result_path=result_path, state_dir=state)
    env |= dict(extra_env or {})
    control_read, control_write = os.pipe()
    env["JOBHOST_CONTROL_FD"] = str(control_write)
    process = subprocess.Popen(
        job_argv(folder, final, test=test),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
        start_new_session=True,  # the job owns its process group, as under the engine
        pass_fds=(control_write,),
    )
    os.close(control_write)  # only the job holds the write end: its exit is our EOF
    return RunningJob(process, result_path, state, scratch, owns_state, control_read)


def run_job(
    folder: Path,
    variables: Mapping[str, Any],
    test: bool = False,
    extra_env: Mapping[str, str] | None = None,
    *,
    state_dir: Path | None = None,
    timeout: float = 90,
) -> CompletedRun:
    """Run a job to completion the way the engine would and return what it left behind."""
    running = start_job(folder, variables, test=test, state_dir=state_dir, extra_env=extra_env)
    return running.finish(timeout=timeout)

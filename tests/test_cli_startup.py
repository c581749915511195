"""``jobhost`` imports a verb's module only when that verb runs (start-up stays small)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.testing import CliRunner

from jobhost.cli import MODULES, VERBS, app, load_verbs
from jobhost.cli.coercion import PlainValues

HEAVY = ("jobhost.cli.local", "jobhost.engine", "jobhost.client", "sqlalchemy", "httpx", "uvicorn")
# A local history or status reads the store: not the catalog, the engine or any settings
# validation (pydantic).
NOT_FOR_READS = (
    "pydantic",
    "jobhost.catalog.definition",
    "jobhost.config",
    "jobhost.engine",
    "alembic",
    "httpx",
)


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def test_help_lists_every_registered_verb_with_its_own_help_line() -> None:
    for module in MODULES:
        registered = load_verbs(module)
        listed = {name for name, (owner, _) in VERBS.items() if owner == module}

        assert set(registered) == listed, (
            f"jobhost.cli.{module} registers {sorted(registered)} but VERBS lists "
            f"{sorted(listed)} for it: give each verb its line in VERBS in jobhost/cli/__init__.py"
            " (and a new module its place in MODULES)"
        )
        for name, command in registered.items():
            assert VERBS[name][1] == _first_paragraph(command.help), name


def test_help_and_a_typo_answer_without_importing_the_verbs() -> None:
    probe = (
        "import sys\nfrom jobhost.cli import main\nsys.argv = ['jobhost', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert re.search(r"\n  history +Past and current executions, newest first\.\n", run.stdout)
    assert run.stdout.strip().splitlines()[-1] == "[]"

    typo = CliRunner().invoke(app, ["histroy"])
    assert typo.exit_code == 2
    assert "No such command 'histroy'. Did you mean 'history'?" in typo.output


def test_a_verb_still_runs_with_the_global_options(tmp_path: Path) -> None:
    job = tmp_path / "Shop" / "jobs" / "Nightly"
    job.mkdir(parents=True)
    (job / "job.json").write_text('{"Name": "Nightly", "ScriptRelativePath": "run.py"}')
    (job / "run.py").write_text("print('hi')\n")

    result = CliRunner().invoke(app, ["--apps", str(tmp_path), "catalog", "--json"])

    assert result.exit_code == 0, result.output
    assert '"Shop/Nightly"' in result.output


def _commands(command: Any) -> list[Any]:
    subcommands = getattr(command, "commands", {}).values()
    return [command, *(c for sub in subcommands for c in _commands(sub))]


def _coerced(coercion: Any, value: Any, param: Any, ctx: Context) -> tuple[str, Any]:
    try:
        return "value", coercion.coerce(value, param=param, ctx=ctx)
    except BadParameter as exc:
        return "error", exc.format_message()


def test_every_parameter_takes_the_values_typer_would_give_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    samples = [None, "abc", "5", "0", "007", "-3", " 5", "", "1000", "1001", "5.0", "true"]
    samples += [str(tmp_path), str(tmp_path / "file"), str(tmp_path / "missing")]
    commands = [typer.main.get_group(app), *load_verbs(*MODULES).values()]

    for command in (c for root in commands for c in _commands(root)):
        ctx = Context(command)
        for param in command.get_params(ctx):
            if not hasattr(param, "type_descriptor"):
                continue
            many = param.multiple or param.nargs == -1
            for sample in samples:
                value = (sample, "x") if many and sample is not None else sample
                ours = _coerced(PlainValues(param.type_descriptor), value, param, ctx)
                typers = _coerced(build_runtime_param(param.type_descriptor), value, param, ctx)

                assert ours == typers, (command.name, param.name, value)


def test_a_local_read_imports_neither_pydantic_nor_the_catalog(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom jobhost.cli import main\n"
        f"sys.argv = ['jobhost', '--data-dir', {str(tmp_path)!r}, 'history', '--limit', '5']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {NOT_FOR_READS!r} if m in sys.modules))"
    )
    env = {**os.environ, "JOBHOST_CREDENTIALS": str(tmp_path / "none.json")}
    for _ in range(2):  # the first one creates the store (with Alembic)
        run = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
        )

    assert run.stdout.strip().splitlines()[-1] == "[]"

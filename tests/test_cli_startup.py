"""``jobhost`` imports a verb's module only when that verb runs (start-up stays small)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from jobhost.cli import MODULES, VERBS, app, load_verbs

HEAVY = ("jobhost.cli.local", "jobhost.engine", "jobhost.client", "sqlalchemy", "httpx", "uvicorn")


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

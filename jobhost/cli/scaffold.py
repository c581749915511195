"""``jobhost new``: a job folder that works the moment it is written."""

from __future__ import annotations

import json
from pathlib import Path

from jobhost.errors import Conflict

SCRIPT = '''"""{display_name}: {description}"""

from __future__ import annotations

import sys
import time

from jobhost.job import context, progress, set_result


def main() -> int:
    name = context.variables.get("Name", "world")
    if context.test:
        # Test mode: do one quick, harmless pass and report what would happen.
        set_result({{"ok": True, "greeting": f"Hello, {{name}}!", "test": True}})
        print(f"Test run fine for {{name}}")
        return 0
    for step in range(1, 4):
        progress(step / 3, f"step {{step}} of 3")
        print(f"step {{step}}: working for {{name}}")
        time.sleep(0.1)
    set_result({{"ok": True, "greeting": f"Hello, {{name}}!"}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

INIT = '''"""Runs before each start: defaults and validation of the variables.

Reads the proposed variables as JSON on stdin, prints the final ones as JSON on stdout.
Exit non-zero with a one-line reason on stderr to reject the start.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    variables = json.load(sys.stdin)
    name = str(variables.get("Name") or "world").strip()
    if len(name) > 40:
        print(f"Name must be at most 40 characters, got {{len(name)}}", file=sys.stderr)
        return 1
    variables["Name"] = name
    json.dump(variables, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def scaffold_job(
    root: Path,
    app: str,
    job: str,
    *,
    display_name: str,
    description: str,
    schedule: str | None,
    init_script: bool,
) -> Path:
    """Write ``root/app/jobs/job``; refuses to touch an existing job folder."""
    folder = root / app / "jobs" / job
    if folder.exists():
        raise Conflict(f"{folder} already exists; jobhost new never overwrites a job")
    folder.mkdir(parents=True)
    definition = {
        "Name": display_name,
        "Description": description or f"{display_name} (created by jobhost new)",
        "default_schedule": schedule,
        "ScriptRelativePath": f"{job}.py",
        "argumentlist": [],
        "roles_start": ["admin", "operator"],
        "roles_stop": ["admin", "operator"],
        "roles_restart": ["admin", "operator"],
        "template_variables": {
            "Name": {"description": "Who the job works for", "type": "string", "default": "world"}
        },
        "timeout_seconds": 600,
    }
    (folder / "job.json").write_text(json.dumps(definition, indent=2) + "\n", encoding="utf-8")
    text = SCRIPT.format(display_name=display_name, description=description or display_name)
    (folder / f"{job}.py").write_text(text, encoding="utf-8")
    if init_script:
        (folder / "init-job.py").write_text(INIT.format(), encoding="utf-8")
    return folder

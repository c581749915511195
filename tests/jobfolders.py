"""Helpers that write real job folders for the catalog tests.

Import explicitly: ``from tests.jobfolders import write_job``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUN_PY = "import sys\nprint('ran', sys.argv[1:])\n"


def write_job(
    root: Path,
    app: str,
    job: str,
    definition: dict[str, Any] | str | None = None,
    *,
    script: str | None = "run.py",
    script_text: str = RUN_PY,
    init: tuple[str, str] | None = None,
) -> Path:
    """Create ``root/app/jobs/job`` with a job.json (a dict, or raw text) and a script.

    ``init`` is ``(file name, text)`` of an init script. Returns the job folder.
    """
    folder = root / app / "jobs" / job
    folder.mkdir(parents=True, exist_ok=True)
    if definition is None:
        definition = {"Name": job, "Description": f"The {job} job"}
    if isinstance(definition, dict):
        definition = {"ScriptRelativePath": script, **definition}
        text = json.dumps(definition, indent=2)
    else:
        text = definition
    (folder / "job.json").write_text(text, encoding="utf-8")
    if script is not None:
        (folder / script).write_text(script_text, encoding="utf-8")
    if init is not None:
        name, body = init
        (folder / name).write_text(body, encoding="utf-8")
    return folder


def touch_later(path: Path) -> None:
    """Move ``path``'s mtime forward, so a rewrite within the clock's granularity shows."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

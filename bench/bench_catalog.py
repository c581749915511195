"""Catalog scan speed: full scans and no-change rescans of 1k and 10k job folders.

Run with ``python -m bench.bench_catalog`` (or ``python -m bench catalog``).

``scan_N`` is a first scan in a process, as at server start or in any CLI command:
every job.json is read and validated (the in-process parse memo is cleared first).
``scan_cached_N`` repeats it with the memo warm: files are still listed and read, but
unchanged bytes are not validated again. ``rescan_N`` is a no-change rescan (stat
only). Wall seconds and this process's CPU seconds are both shown: on a busy machine
the wall figure mostly measures the neighbours.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from jobhost.catalog.discovery import Catalog, parse_job_json, rescan, scan


def build(root: Path, count: int, per_app: int = 100) -> None:
    """``count`` job folders, ``per_app`` per app, each a realistic job.json and script."""
    for index in range(count):
        folder = root / f"App{index // per_app:04d}" / "jobs" / f"Job{index:05d}"
        folder.mkdir(parents=True)
        definition = {
            "Name": f"Job {index} every {{{{Interval}}}} s",
            "Description": "A benchmark job",
            "default_schedule": "*/5 * * * *",
            "ScriptRelativePath": "run.py",
            "argumentlist": ["--interval", "{{Interval}}"],
            "roles_start": ["admin", "operators"],
            "roles_stop": ["admin"],
            "template_variables": {
                "Interval": {"type": "integer", "default": 60, "min": 1, "max": 3600}
            },
            "timeout_seconds": 600,
        }
        (folder / "job.json").write_text(json.dumps(definition))
        (folder / "run.py").write_text("print('hi')\n")


def _timed(name: str, action: Callable[[], Catalog], results: dict[str, float]) -> Catalog:
    """Run ``action`` once; record and print its wall time (and CPU time beside it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = action()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results[name] = wall
    print(f"{name:>20}: {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms cpu", flush=True)
    return value


def run() -> dict[str, float]:
    """Wall seconds per operation, keyed e.g. ``scan_10000``; prints each as it goes."""
    results: dict[str, float] = {}
    for count in (1_000, 10_000):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "apps"
            build(root, count)
            scan([root])  # warm the page cache, as a running server would have it
            parse_job_json.cache_clear()
            catalog = _timed(f"scan_{count}", partial(scan, [root]), results)
            if len(catalog.valid()) != count:
                raise RuntimeError(f"expected {count} valid jobs, got {catalog!r}")
            _timed(f"scan_cached_{count}", partial(scan, [root]), results)
            again = _timed(f"rescan_{count}", partial(rescan, catalog, [root]), results)
            if again is not catalog:
                raise RuntimeError("a no-change rescan must return the same catalog")
    return results


if __name__ == "__main__":
    run()

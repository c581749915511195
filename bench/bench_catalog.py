"""Catalog scan speed: full scans and no-change rescans of 1k and 10k job folders.

Run with ``python -m bench.bench_catalog``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from jobhost.catalog.discovery import rescan, scan


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


def _timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def run() -> dict[str, float]:
    """Seconds per operation, keyed e.g. ``scan_10000`` and ``rescan_10000``."""
    results: dict[str, float] = {}
    for count in (1_000, 10_000):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "apps"
            build(root, count)
            scan([root])  # warm the page cache, as a running server would have it
            start = time.perf_counter()
            catalog = scan([root])
            results[f"scan_{count}"] = time.perf_counter() - start
            if len(catalog.valid()) != count:
                raise RuntimeError(f"expected {count} valid jobs, got {catalog!r}")
            start = time.perf_counter()
            again = rescan(catalog, [root])
            results[f"rescan_{count}"] = time.perf_counter() - start
            if again is not catalog:
                raise RuntimeError("a no-change rescan must return the same catalog")
    return results


if __name__ == "__main__":
    for name, seconds in run().items():
        print(f"{name:>14}: {seconds * 1000:8.1f} ms")

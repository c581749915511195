"""Sample system metrics: once with ``--test``, else every ``Interval`` seconds until SIGTERM.

Each sample is printed as one JSON line and appended to ``<state_dir>/samples.jsonl``
so a chart can show history across runs. That file is bounded: when it grows past
``TRIM_AT`` lines it is cut back to the newest ``KEEP_LINES`` (trimming in batches
keeps the rewrite rare instead of once per sample).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from jobhost.job import context, progress, set_result

DATA_ROOT = "/"
KEEP_LINES = 10_000
TRIM_AT = 12_000
GIB = 1024**3


def stop_requested_within(seconds: float) -> bool:
    """Wait up to ``seconds`` for SIGTERM; True once it has come.

    SIGTERM is blocked (see ``run_forever``) and taken here with ``sigtimedwait``, so a stop
    that lands mid-sample stays pending until the sample is recorded. No Python signal
    handler runs: one that sets a ``threading.Event`` can deadlock when the signal
    lands while the main thread holds that event's lock inside ``wait``.
    """
    return signal.sigtimedwait({signal.SIGTERM}, seconds) is not None


def sample(cpu_window: float) -> dict[str, Any]:
    """One reading. ``cpu_window`` 0 measures CPU since the previous call."""
    cpu = psutil.cpu_percent(interval=cpu_window or None)
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(DATA_ROOT)
    load1, load5, load15 = psutil.getloadavg()
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cpu_percent": round(cpu, 2),
        "memory_percent": round(memory.percent, 2),
        "memory_used_gb": round((memory.total - memory.available) / GIB, 2),
        "memory_total_gb": round(memory.total / GIB, 2),
        "disk_path": DATA_ROOT,
        "disk_percent": round(disk.percent, 2),
        "disk_used_gb": round(disk.used / GIB, 2),
        "disk_total_gb": round(disk.total / GIB, 2),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


class SampleLog:
    """``samples.jsonl`` in the state folder, appended to and trimmed in batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = self._count()

    def _count(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as file:
            return sum(1 for _ in file)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        self.lines += 1
        if self.lines > TRIM_AT:
            self.trim()

    def trim(self) -> None:
        kept = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[-KEEP_LINES:]
        partial = self.path.with_suffix(".jsonl.partial")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, self.path)  # a reader sees the old file or the new one, never half
        self.lines = len(kept)


def summary(metrics: dict[str, Any]) -> str:
    return (
        f"Metrics collected: CPU {metrics['cpu_percent']:g}%, "
        f"Memory {metrics['memory_percent']:g}%, Disk {metrics['disk_percent']:g}%"
    )


def run_test() -> int:
    metrics = sample(cpu_window=0.5)
    print(f"[ok] CPU usage read: {metrics['cpu_percent']:g}%")
    print(f"[ok] Memory usage read: {metrics['memory_percent']:g}%")
    print(f"[ok] Disk usage of {DATA_ROOT} read: {metrics['disk_percent']:g}%")
    print(f"[ok] Load average read: {metrics['load_average']}")
    set_result(metrics)
    print(summary(metrics), flush=True)
    return 0


def run_forever(interval: int) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    log = SampleLog(context.state_dir / "samples.jsonl")
    print(f"Sampling every {interval} s into {log.path} (stop to finish)", flush=True)
    count = 0
    last: dict[str, Any] | None = None
    cpu_window = 0.5  # the first CPU reading needs a window; later ones use the gap
    stopped = False
    while not stopped:
        last = sample(cpu_window)
        cpu_window = 0
        count += 1
        log.append(last)
        print(json.dumps(last), flush=True)
        progress(None, summary(last))  # a daemon has no fraction, only a live status line
        stopped = stop_requested_within(interval)
    set_result({"samples": count, "last_sample": last})
    print(f"Stopped after {count} sample{'' if count == 1 else 's'}", flush=True)
    return 0


def main() -> int:
    if context.test:
        return run_test()
    return run_forever(int(context.variables.get("Interval", 30)))


if __name__ == "__main__":
    sys.exit(main())

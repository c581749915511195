"""``make bench-peers``: JobHost next to its peers, interleaved in one run, on one machine.

Each repetition runs, one after the other: the machine's spawn limits, JobHost's own
benchmarks (``python -m bench engine http scheduler catalog`` from this virtualenv), then
Celery + Redis, APScheduler (SQLite job store) and supervisord from the scripts in
``bench/peers/``, run by the peers' interpreter (``--peers-python``, a virtualenv built from
``bench/peers/requirements.txt`` by the Makefile target). It then prints every figure as the
median of the repetitions with its range, and the ratios the targets are stated in.

    python -m bench.side_by_side --peers-python .venv-peers/bin/python [--reps 2]

Absolute figures drift on a shared machine; compare the ratios, taken in the same run.
Fairness: Celery keeps its state in Redis memory without fsync (a speed anchor, not a
durability peer) and none of the peers captures a job's output, which JobHost does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers"
PROJECT = PEERS.parent.parent
JOBHOST_BENCHES = ("engine", "http", "scheduler", "catalog")
# One line per figure of JobHost's benchmarks: "engine  name value", "http    name value",
# "scheduler  group name value" and the catalog's "name:  N ms wall  M ms cpu".
_LINE = re.compile(r"^(engine|http)\s+(\S+)\s+(-?[\d.]+)$")
_SCHEDULER = re.compile(r"^scheduler\s+(\S+)\s+(\S+)\s+(-?[\d.]+)$")
_CATALOG = re.compile(r"^\s*(scan_\d+):\s+([\d.]+) ms wall")

Figures = dict[str, float]


def _run(argv: list[str], timeout: float, **kwargs: object) -> str:
    """Run ``argv`` in a session of its own; on timeout stop it by pid, then its group."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the peer scripts stop their children on it
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        raise RuntimeError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{err[-2000:]}")
    return str(out)


def jobhost() -> Figures:
    out = _run([sys.executable, "-m", "bench", *JOBHOST_BENCHES], timeout=900, cwd=PROJECT)
    figures: Figures = {}
    for line in out.splitlines():
        if match := _LINE.match(line.strip()):
            figures[f"{match[1]}.{match[2]}"] = float(match[3])
        elif match := _SCHEDULER.match(line.strip()):
            figures[f"scheduler.{match[1]}.{match[2]}"] = float(match[3])
        elif match := _CATALOG.match(line):
            figures[f"catalog.{match[1]}_ms"] = float(match[2])
    return figures


def peer(python: str, script: str, prefix: str) -> Figures:
    """The figures the peer script prints (one JSON line), named ``prefix.<key>``."""
    out = _run([python, str(PEERS / script)], timeout=600, cwd=PEERS)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{script} printed no figures")
    return _flatten(json.loads(lines[-1]), prefix)


def _flatten(data: dict[str, object], prefix: str) -> Figures:
    flat: Figures = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}.{key}")
        elif isinstance(value, int | float):
            flat[f"{prefix}.{key}"] = float(value)
    return flat


class Table:
    """Medians (with ranges) over the repetitions, and the ratios between them."""

    def __init__(self, reps: list[Figures]) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)
        for figures in reps:
            for name, value in figures.items():
                self.values[name].append(value)

    def med(self, name: str) -> float:
        values = self.values.get(name)
        return statistics.median(values) if values else float("nan")

    def show(self, name: str, unit: str, digits: int = 2) -> str:
        values = self.values.get(name)
        if not values:
            return "n/a"
        text = f"{self.med(name):,.{digits}f}{unit}"
        if len(values) > 1:
            text += f" ({min(values):,.{digits}f} to {max(values):,.{digits}f})"
        return text

    def ratio(self, top: str, bottom: str) -> str:
        value = self.med(top) / self.med(bottom)
        return "n/a" if value != value else f"{value:.2f}x"


def _rows(t: Table) -> list[tuple[str, str, str, str]]:
    jh_rate = "engine.completed_per_second_1000_true"
    return [
        (
            "trivial runs completed per second, 1,000 in a burst, durably recorded",
            t.show(jh_rate, "/s", 0),
            f"Celery {t.show('celery.per_s', '/s', 0)} (no durable history); "
            f"APScheduler/SQLite {t.show('apscheduler.per_s', '/s', 0)}; "
            f"two-thread spawn limit {t.show('spawn.threads_per_s', '/s', 0)}",
            f"{t.ratio(jh_rate, 'celery.per_s')} Celery, "
            f"{t.ratio(jh_rate, 'apscheduler.per_s')} APScheduler, "
            f"{t.ratio(jh_rate, 'spawn.threads_per_s')} of the spawn limit",
        ),
        (
            "start → running p50 / p99",
            f"{t.show('engine.start_to_running_true_p50_ms', ' ms')} / "
            f"{t.show('engine.start_to_running_true_p99_ms', ' ms')}",
            f"Celery start → result {t.show('celery.latency.p50_ms', ' ms')} p50; "
            f"supervisord start {t.show('supervisor.start.p50_ms', ' ms')} p50",
            f"{t.ratio('celery.latency.p50_ms', 'engine.start_to_running_true_p50_ms')} "
            f"faster than Celery, "
            f"{t.ratio('supervisor.start.p50_ms', 'engine.start_to_running_true_p50_ms')} "
            "than supervisord",
        ),
        (
            "stop of a running program p50",
            "",
            f"supervisord stop {t.show('supervisor.stop.p50_ms', ' ms')}",
            "",
        ),
        (
            "host CPU per run",
            t.show("engine.host_cpu_ms_per_execution_1000_true", " ms"),
            "",
            "",
        ),
        (
            "HTTP start → running p50",
            t.show("http.start_to_running_p50_ms", " ms"),
            "",
            "",
        ),
        (
            "scheduler: due → spawned p50; 100 jobs due the same second: spread p50, last spawn",
            f"{t.show('scheduler.one_job.end_to_end_p50_ms', ' ms')}; "
            f"{t.show('scheduler.hundred_jobs.spread_p50_ms', ' ms', 0)}, "
            f"{t.show('scheduler.hundred_jobs.end_to_end_max_ms', ' ms', 0)} after it was due",
            "",
            "",
        ),
        (
            "history reads (GET /history, 10 clients, page of 50)",
            f"{t.show('http.history_rps_10_clients', '/s', 0)} at "
            f"{t.show('http.history_cpu_us_10_clients', ' µs', 0)} CPU each",
            f"status reads: {t.show('http.status_rps_10_clients', '/s', 0)}",
            "",
        ),
        (
            "catalog first scan, 10,000 jobs",
            t.show("catalog.scan_10000_ms", " ms", 0),
            "",
            "",
        ),
        (
            "1,000 running jobs: host RSS",
            t.show("engine.host_rss_mb_1000_running_sleep", " MiB", 0),
            "",
            "",
        ),
        (
            "spawn limits: /bin/true with pipes and a new session",
            f"subprocess {t.show('spawn.subprocess_ms', ' ms')}, "
            f"asyncio {t.show('spawn.asyncio_ms', ' ms')}",
            f"one asyncio loop {t.show('spawn.asyncio_per_s', '/s', 0)}, "
            f"two threads {t.show('spawn.threads_per_s', '/s', 0)}",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peers-python", required=True, help="the peers' venv interpreter")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    args.peers_python = str(Path(args.peers_python).absolute())  # the peers run in bench/peers
    steps: list[tuple[str, Callable[[], Figures]]] = [
        ("spawn limits", lambda: peer(args.peers_python, "spawn_limits.py", "spawn")),
        ("JobHost", jobhost),
        ("Celery + Redis", lambda: peer(args.peers_python, "celery_peer.py", "celery")),
        (
            "APScheduler/SQLite",
            lambda: peer(args.peers_python, "apscheduler_peer.py", "apscheduler"),
        ),
        ("supervisord", lambda: peer(args.peers_python, "supervisor_peer.py", "supervisor")),
    ]
    reps: list[Figures] = []
    for rep in range(1, args.reps + 1):
        figures: Figures = {}
        for name, step in steps:
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"rep {rep}/{args.reps}: {name} (load {load})", flush=True)
            begun = time.monotonic()
            got = step()
            figures |= got
            print(f"  {len(got)} figures in {time.monotonic() - begun:.0f} s", flush=True)
        reps.append(figures)
    table = Table(reps)
    print(f"\nmedians of {args.reps} repetitions (range in brackets)\n")
    print("| figure | JobHost | peer | ratio |\n|---|---|---|---|")
    for row in _rows(table):
        print("| " + " | ".join(row) + " |")
    print("\nevery figure, median of the repetitions:")
    for name in sorted(table.values):
        print(f"  {name:55s} {table.med(name):12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

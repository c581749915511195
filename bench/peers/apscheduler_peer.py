"""APScheduler 3 with its SQLite job store: ``--burst`` "run now" jobs that run ``/bin/true``.

A ``BackgroundScheduler`` with a ``SQLAlchemyJobStore`` on a fresh SQLite file and a
``ThreadPoolExecutor`` of ``--workers`` threads; the figure is wall time from the first
``add_job`` to the last job finished. Usage: ``python apscheduler_peer.py [--workers 2,10]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import emit, log, scratch
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

_lock = threading.Lock()
_done = threading.Event()
_count = [0, 0]  # finished, wanted


def run_true() -> None:
    subprocess.run(["/bin/true"], check=True)
    with _lock:
        _count[0] += 1
        if _count[0] >= _count[1]:
            _done.set()


def burst(count: int, workers: int, timeout: float) -> float:
    _count[:] = [0, count]
    _done.clear()
    store = SQLAlchemyJobStore(url=f"sqlite:///{scratch('apscheduler') / 'jobs.sqlite'}")
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(workers)},
        timezone="UTC",
    )
    scheduler.start()
    try:
        begun = time.perf_counter()
        for n in range(count):
            scheduler.add_job(run_true, id=f"j{n}", misfire_grace_time=None)
        finished = _done.wait(timeout)
        elapsed = time.perf_counter() - begun
    finally:
        scheduler.shutdown(wait=True)
    if not finished:
        raise SystemExit(f"only {_count[0]} of {count} jobs finished within {timeout} s")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--workers", default="2,10")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for workers in (int(w) for w in args.workers.split(",")):
        burst(20, workers, 30)  # warm-up
        figures[f"per_s_{workers}_threads"] = burst(args.burst, workers, args.timeout)
    figures["per_s"] = max(figures.values())
    log("apscheduler", figures)
    emit(figures)


if __name__ == "__main__":
    main()

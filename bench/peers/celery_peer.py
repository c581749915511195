"""Celery + Redis: a task that runs ``/bin/true``, on a ``celery worker -P prefork -c 2``.

Starts its own ``redis-server`` on a free loopback port and the worker, then measures
``latency`` (``apply_async`` to the result in the client, sequentially) and
``throughput`` (``--burst`` tasks submitted at once, until every result is in). Both are
stopped by pid at the end. Usage: ``python celery_peer.py [--burst 1000] [--latency 300]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import emit, latency_ms, log, redis_server, scratch, start, stop, venv_bin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    folder = scratch("celery")
    with redis_server(folder) as url:
        os.environ["PEER_REDIS_URL"] = url
        import celery_tasks  # reads PEER_REDIS_URL

        here = str(Path(__file__).resolve().parent)
        argv = [venv_bin("celery"), "-A", "celery_tasks", "worker", "-P", "prefork", "-c", "2"]
        worker = start([*argv, "--loglevel=WARNING"], folder / "worker.log", cwd=here)
        try:
            while not celery_tasks.app.control.ping(timeout=0.5):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"celery worker did not come up; see {folder}")
            for _ in range(30):  # warm-up
                celery_tasks.run_true.delay().get(timeout=30)
            samples = []
            for _ in range(args.latency):
                if time.monotonic() > deadline:
                    break
                begun = time.perf_counter()
                celery_tasks.run_true.delay().get(timeout=30)
                samples.append(time.perf_counter() - begun)
            begun = time.perf_counter()
            results = [celery_tasks.run_true.delay() for _ in range(args.burst)]
            for result in results:
                result.get(timeout=max(1.0, deadline - time.monotonic()))
            elapsed = time.perf_counter() - begun
            for result in results:
                result.forget()
        finally:
            stop(worker)
    figures = {"latency": latency_ms(samples), "per_s": args.burst / elapsed}
    log("celery", figures)
    emit(figures)


if __name__ == "__main__":
    main()

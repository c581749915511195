"""The machine's spawn limits for ``/bin/true``, the floor under every job host's figures.

- ``subprocess_ms`` / ``asyncio_ms``: one spawn with stdout/stderr pipes and a new session,
  until ``wait`` returns (p50 of ``--latency`` sequential runs);
- ``asyncio_per_s``: one event loop keeping ``--concurrency`` spawns in flight;
- ``threads_per_s``: two threads, each running ``subprocess.run`` in a loop.

Each throughput cell stops after ``--burst`` spawns or ``--seconds``, whichever is first.
Standard library only. Usage: ``python spawn_limits.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import emit, log, percentile

TRUE = ["/bin/true"]
PIPE = subprocess.PIPE


def subprocess_latency(runs: int) -> float:
    samples = []
    for _ in range(runs):
        begun = time.perf_counter()
        proc = subprocess.Popen(TRUE, stdout=PIPE, stderr=PIPE, start_new_session=True)
        proc.communicate()
        samples.append(time.perf_counter() - begun)
    return percentile(samples, 50) * 1000


async def asyncio_latency(runs: int) -> float:
    samples = []
    for _ in range(runs):
        begun = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *TRUE, stdout=PIPE, stderr=PIPE, start_new_session=True
        )
        await proc.communicate()
        samples.append(time.perf_counter() - begun)
    return percentile(samples, 50) * 1000


async def asyncio_rate(total: int, concurrency: int, seconds: float) -> float:
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    done = [0]

    async def worker() -> None:
        while next(counter) < total and time.monotonic() < deadline:
            proc = await asyncio.create_subprocess_exec(*TRUE, close_fds=False)
            await proc.wait()
            done[0] += 1

    begun = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done[0] / (time.perf_counter() - begun)


def threads_rate(total: int, threads: int, seconds: float) -> float:
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    done = [0] * threads

    def worker(slot: int) -> None:
        while next(counter) < total and time.monotonic() < deadline:
            subprocess.run(TRUE, check=False)
            done[slot] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    begun = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / (time.perf_counter() - begun)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--burst", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    subprocess_latency(20)  # warm-up
    figures = {
        "subprocess_ms": subprocess_latency(args.latency),
        "asyncio_ms": asyncio.run(asyncio_latency(args.latency)),
        "asyncio_per_s": asyncio.run(asyncio_rate(args.burst, args.concurrency, args.seconds)),
        "threads_per_s": threads_rate(args.burst, 2, args.seconds),
    }
    log("spawn", figures)
    emit(figures)


if __name__ == "__main__":
    main()

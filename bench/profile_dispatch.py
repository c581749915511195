"""Where the dispatch path spends its time: py-spy on a burst of ``/bin/true`` runs.

    python -m bench.profile_dispatch [--runs 2000] [--rate 100] [--out /tmp/dispatch]

Opens an engine as ``python -m bench engine`` does, warms it up, then samples this process
and the data dir's runner (when the local executor uses one) with py-spy (GIL holder only,
``--rate`` Hz: a burst lasts seconds, so a higher rate gives more samples) while
``--runs`` starts are submitted at once and awaited, and prints each process's top frames
(inclusive and own). The raw stacks stay in ``OUT-engine`` and
``OUT-runner`` (collapsed format, for flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import tempfile
from pathlib import Path

from bench.bench_engine import _host_processes, _job, _latency, _throughput
from bench.history_reads import _py_spy, top_frames
from jobhost.config import Settings
from jobhost.engine import JobHost


async def _run(root: Path, runs: int, out: str, rate_hz: int) -> None:
    apps = root / "apps"
    _job(apps, "True", "run", "#!/bin/sh\n:\n")
    settings = Settings(
        apps_roots=[apps], data_dir=root / "data", watch=False, scheduler_enabled=False
    )
    async with JobHost(settings) as engine:
        await _latency(engine, "Bench/True", 50)  # warm-up: imports, first connections
        processes = _host_processes(settings.data_dir)
        names = ["engine", "runner", "other"][: len(processes)]
        sample = [_py_spy(), "record", "--gil", "-r", str(rate_hz), "-f", "raw"]
        spies = [
            subprocess.Popen(
                [*sample, "-o", f"{out}-{name}", "-p", str(process.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, process in zip(names, processes, strict=False)
        ]
        await asyncio.sleep(1.0)  # py-spy attaches
        try:
            rate, host_ms, _ = await _throughput(engine, "Bench/True", runs, settings.data_dir)
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for spy in spies:
                spy.wait(timeout=60)
    print(f"dispatch {runs} runs: {rate:.0f}/s, host CPU {host_ms:.2f} ms per run (sampled)")
    for name in names:
        print(f"-- {name}\n{top_frames(Path(f'{out}-{name}'), 30)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "jobhost-dispatch"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), args.runs, args.out, args.rate))


if __name__ == "__main__":
    main()

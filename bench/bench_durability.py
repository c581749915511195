"""SIGKILL rounds against a real ``jobhost serve`` (issue 9's durability loop): the counts.

    python -m bench durability [--rounds N] [--seed S]

Each round starts a server, keeps starting short and long runs while an every-second
schedule fires, and SIGKILLs it (every fifth round one is also killed while it starts
up); a final server awaits everything. Prints acknowledged starts, lost ones, duplicate
rows, processes without a record, runs alive at a kill and how many of them were
re-adopted with their exit code (see ``tests/chaos.py``; ``make test`` runs 20 rounds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.chaos import run_rounds


def run(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench durability")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9)
    options = parser.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="jobhost-durability-") as root:
        began = time.perf_counter()
        counts = run_rounds(Path(root), options.rounds, seed=options.seed, say=print)
        seconds = time.perf_counter() - began
    print(counts.line())
    print(f"{seconds:.0f} s for {options.rounds} rounds; clean: {counts.clean}")
    for problem in counts.problems:
        print("  " + problem)
    return {
        "acknowledged": counts.acknowledged,
        "lost": counts.lost,
        "duplicates": counts.duplicates,
        "ghosts": counts.ghosts,
        "surviving": counts.surviving,
        "readopted": counts.readopted,
        "seconds": seconds,
    }


if __name__ == "__main__":
    run()

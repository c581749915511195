"""``make bench``: run every benchmark module and print its figures.

Each module has ``run() -> dict[str, float]`` and prints its own lines; a module can be
run alone with ``python -m bench.bench_<name>``. Pass names to run a subset:
``python -m bench engine spawn``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(selected: list[str]) -> int:
    names = sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name.startswith("bench_")
    )
    unknown = [name for name in selected if name not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return 2
    for name in selected or names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.bench_{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

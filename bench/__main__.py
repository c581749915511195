"""``make bench``: run every benchmark module and print its figures.

Each module has ``run() -> dict[str, float]`` and prints its own lines; a module can be
run alone with ``python -m bench.bench_<name>``. Pass names to run a subset:
``python -m bench engine spawn``. Options after one name go to that module's ``run``
(``python -m bench durability --rounds 30``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(arguments: list[str]) -> int:
    first_option = next((i for i, arg in enumerate(arguments) if arg.startswith("-")), None)
    selected = arguments if first_option is None else arguments[:first_option]
    options = [] if first_option is None else arguments[first_option:]
    if options and len(selected) != 1:
        print("options go to one benchmark: python -m bench <name> --option ...")
        return 2
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
        module = importlib.import_module(f"bench.bench_{name}")
        if options:
            module.run(options)
        else:
            module.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

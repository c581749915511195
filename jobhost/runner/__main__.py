"""``python -m jobhost.runner DIR READY_FD``: the runner of one data dir (see ``service``).

Forks at once: the server that started it reaps the short-lived parent, and the runner
itself belongs to nobody (it outlives the server). ``READY_FD`` gets ``ready`` once the
socket listens (or another runner already serves ``DIR``).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m jobhost.runner DIR READY_FD", file=sys.stderr)
        return 2
    directory, ready_fd = argv[1], int(argv[2])
    if os.fork() > 0:
        os._exit(0)
    import asyncio
    import logging
    from pathlib import Path

    from jobhost.runner.service import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(Path(directory), ready_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

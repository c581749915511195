"""Twenty SIGKILL rounds against a real ``jobhost serve`` (see ``tests/chaos.py``): no
acknowledged start lost, no duplicate row, no process without a record, every run alive
at a kill re-adopted and ended with its own exit code. The counts are printed.

``CHAOS_ROUNDS`` changes the number of rounds; ``python -m bench durability --rounds N``
runs the same loop outside pytest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos import run_rounds

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "20"))


# Each round starts a server (a few seconds on a busy two-core machine) and keeps it up
# for up to 2.5 s; the last server awaits every run. The budget holds at ~20 s a round.
@pytest.mark.timeout(60 + 30 * ROUNDS)
def test_sigkill_rounds_lose_nothing_and_leave_no_process_without_a_record(
    tmp_path: Path,
) -> None:
    counts = run_rounds(tmp_path, ROUNDS, say=print)
    print(counts.line())
    assert counts.rounds == ROUNDS
    assert counts.acknowledged >= ROUNDS  # the rounds did start runs
    assert counts.surviving > 0  # and some were alive when their server died
    assert counts.clean, counts.line() + "\n" + "\n".join(counts.problems)

"""SIGKILL rounds against a real ``jobhost serve``: the durability counts of issue 9.

Each round starts a server on one data dir, keeps starting short and long runs (each
with the exit code it must end with) while an every-second schedule fires, and SIGKILLs
the server at a random moment, starts in flight included; every fifth round a server is
also SIGKILLed while it starts up, before or during its reconciliation. After the last round a final
server re-adopts what is left, the schedule is switched off, every run is awaited, and
the store and /proc are checked:

- ``lost``: acknowledged starts (202) with no row, or recorded ``lost``;
- ``duplicates``: two rows for one idempotency key or one schedule fire;
- ``ghosts``: processes (found by ``JOBHOST_EXECUTION_ID`` in /proc) with no record that
  were still alive once the next server had started, or at the end;
- ``surviving`` / ``readopted``: runs whose process was alive when their server was
  killed, and those of them that ended with the exit code (and, for the long ones, the
  exact output) they were started for;
- ``open_fires``: schedule fires claimed and never resolved (run, skipped or missed).

Used by ``tests/test_chaos.py`` (20 rounds in ``make test``) and ``python -m bench
durability --rounds N``, which prints the counts.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.jobfolders import write_job
from tests.serveprocess import ServeProcess, end_runner, gone, job_processes

SHORT = 'echo "short $JOBHOST_VAR_Code"\nexit "$JOBHOST_VAR_Code"\n'
LONG = (
    "i=1\n"
    'while [ "$i" -le "$JOBHOST_VAR_Ticks" ]; do echo "tick $i"; i=$((i + 1)); sleep 0.1; done\n'
    'exit "$JOBHOST_VAR_Code"\n'
)
TICK = "echo fired\n"
VARIABLES = {"Code": "exit code", "Ticks": "lines to print, one every 0.1 s"}
STARTERS = 3  # clients starting runs at once, each with a pause of 0-0.1 s between starts


def write_site(apps: Path) -> None:
    write_job(
        apps,
        "Chaos",
        "Short",
        {
            "Name": "Short",
            "Description": "exits at once",
            "max_concurrent": 0,
            "template_variables": {"Code": VARIABLES["Code"]},
        },
        script="run.sh",
        script_text=SHORT,
    )
    write_job(
        apps,
        "Chaos",
        "Long",
        {
            "Name": "Long",
            "Description": "prints for seconds",
            "max_concurrent": 0,
            "template_variables": VARIABLES,
        },
        script="run.sh",
        script_text=LONG,
    )
    write_job(
        apps,
        "Chaos",
        "Tick",
        {
            "Name": "Tick",
            "Description": "every second",
            "default_schedule": "* * * * * *",
            "max_concurrent": 0,
        },
        script="run.sh",
        script_text=TICK,
    )


@dataclass
class Wanted:
    """What an acknowledged start must end as."""

    job_id: str
    code: int
    output: str | None  # the exact output, for long runs


@dataclass
class Counts:
    rounds: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0  # starts in flight when the server died (no 202 seen)
    scheduled: int = 0
    lost: int = 0
    duplicates: int = 0
    ghosts: int = 0
    ended_unrecorded: int = 0  # seen at a kill with no record yet, ended at the next start
    surviving: int = 0
    readopted: int = 0
    wrong_exit: int = 0
    wrong_output: int = 0
    open_fires: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        share = 100.0 * self.readopted / self.surviving if self.surviving else 100.0
        return (
            f"rounds {self.rounds}: {self.acknowledged} acknowledged starts "
            f"({self.unacknowledged} in flight at a kill), {self.scheduled} scheduled runs; "
            f"lost {self.lost}, duplicate rows {self.duplicates}, processes without a record "
            f"{self.ghosts} (unrecorded ones ended at reconcile {self.ended_unrecorded}), "
            f"surviving runs {self.surviving}, re-adopted with their exit code "
            f"{self.readopted} ({share:.0f}%), wrong exit {self.wrong_exit}, wrong output "
            f"{self.wrong_output}, fires left open {self.open_fires}"
        )

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicates
            or self.ghosts
            or self.readopted != self.surviving
            or self.wrong_exit
            or self.wrong_output
            or self.open_fires
        )


class Starter(threading.Thread):
    """Starts runs on one server until told to stop (or the server is gone)."""

    def __init__(
        self,
        server: ServeProcess,
        rng: random.Random,
        wanted: dict[str, Wanted],
        halt: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.rng = rng
        self.wanted = wanted
        self.halt = halt
        self.gone = False  # the server went away under this starter
        self.in_flight = 0
        self.client = httpx.Client(
            base_url=server.url,
            timeout=30,
            headers=dict(server.client.headers),
            cookies=server.client.cookies,
        )

    def run(self) -> None:
        try:
            while not self.halt.is_set() and not self.gone:
                self._one()
                self.halt.wait(self.rng.uniform(0.0, 0.1))
        finally:
            self.client.close()

    def _one(self) -> None:
        code = self.rng.choice((0, 0, 1, 3))
        if self.rng.random() < 0.5:
            job_id, ticks, output = "Chaos/Short", 0, None
            variables = {"Code": str(code)}
        else:
            ticks = self.rng.randint(5, 40)
            job_id, output = "Chaos/Long", "".join(f"tick {i}\n" for i in range(1, ticks + 1))
            variables = {"Code": str(code), "Ticks": str(ticks)}
        body = {"job_id": job_id, "variables": variables}
        key = uuid.uuid4().hex
        self.in_flight += 1
        try:
            response = self.client.post(
                "/api/v1/jobs/start", json=body, headers={"Idempotency-Key": key}
            )
        except httpx.HTTPError:
            self.gone = True  # the server is gone: this start was never acknowledged
            return
        self.in_flight -= 1
        if response.status_code == 202:
            self.wanted[response.json()["id"]] = Wanted(job_id, code, output)
        elif response.status_code >= 500:
            raise AssertionError(f"start answered {response.status_code}: {response.text}")


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return list(conn.execute(sql))


def _recorded(db: Path, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute(f"SELECT id FROM executions WHERE id IN ({marks})", sorted(ids))  # noqa: S608
        return {row[0] for row in rows}


def run_rounds(
    root: Path,
    rounds: int,
    *,
    seed: int = 9,
    say: Callable[[str], None] = lambda _: None,
) -> Counts:
    """``rounds`` SIGKILL rounds on a fresh site under ``root``; the counts."""
    rng = random.Random(seed)
    apps, data_dir = root / "apps", root / "data"
    write_site(apps)
    counts = Counts()
    wanted: dict[str, Wanted] = {}
    alive_at_kill: dict[str, int] = {}  # execution ID → the round its process was seen in
    try:
        for number in range(1, rounds + 1):
            if number % 5 == 3:  # a server killed while it starts up (and reconciles)
                early = ServeProcess(apps, data_dir, wait=False)
                early.ready.wait(rng.uniform(0.5, 3.0))
                early.kill(signal.SIGKILL)
            server = ServeProcess(apps, data_dir)
            _check_ghosts(data_dir, alive_at_kill, counts, number)
            halt = threading.Event()
            starters = [
                Starter(server, random.Random(rng.random()), wanted, halt) for _ in range(STARTERS)
            ]
            for starter in starters:
                starter.start()
            halt.wait(rng.uniform(0.3, 2.5))  # the server's time up: a random moment
            server.kill(signal.SIGKILL)
            halt.set()
            for starter in starters:
                starter.join(timeout=60)
                counts.unacknowledged += starter.in_flight
            for execution_id in job_processes(data_dir):
                alive_at_kill.setdefault(execution_id, number)
            counts.rounds = number
            say(f"round {number}: {len(wanted)} acknowledged, {len(alive_at_kill)} seen alive")
        _final(apps, data_dir, wanted, alive_at_kill, counts)
    finally:
        end_runner(data_dir)
    return counts


def _check_ghosts(
    data_dir: Path, alive_at_kill: dict[str, int], counts: Counts, number: int
) -> None:
    """Once a server is up (reconciled), no process seen at the last kill may run on
    without a record."""
    db = data_dir / "jobhost.db"
    if not db.exists():
        return
    candidates = {i for i, seen in alive_at_kill.items() if seen == number - 1}
    recorded = _recorded(db, candidates)
    live = job_processes(data_dir)
    for execution_id in sorted(candidates - recorded):
        pids = live.get(execution_id, [])
        if any(not gone(pid, timeout=30) for pid in pids):
            counts.ghosts += 1
            counts.problems.append(f"round {number}: {execution_id} {pids} runs with no record")
        else:
            counts.ended_unrecorded += 1


def _final(
    apps: Path,
    data_dir: Path,
    wanted: dict[str, Wanted],
    alive_at_kill: dict[str, int],
    counts: Counts,
) -> None:
    server = ServeProcess(apps, data_dir)
    try:
        _check_ghosts(data_dir, alive_at_kill, counts, counts.rounds + 1)
        response = server.client.put("/api/v1/jobs/schedules/Chaos/Tick", json={"enabled": False})
        assert response.status_code == 200, response.text
        running = server.client.get("/api/v1/jobs/running").json()["executions"]
        for execution in running:
            server.wait_end(execution["id"])
        _count(server, data_dir, wanted, alive_at_kill, counts)
    finally:
        server.kill(signal.SIGTERM)


def _count(
    server: ServeProcess,
    data_dir: Path,
    wanted: dict[str, Wanted],
    alive_at_kill: dict[str, int],
    counts: Counts,
) -> None:
    db = data_dir / "jobhost.db"
    counts.acknowledged = len(wanted)
    rows = {
        row[0]: row[1:]
        for row in _rows(
            db, "SELECT id, job_id, status, exit_code, trigger, variables FROM executions"
        )
    }
    counts.scheduled = sum(1 for row in rows.values() if row[3] == "schedule")
    for execution_id, want in wanted.items():
        row = rows.get(execution_id)
        if row is None or row[1] == "lost":
            counts.lost += 1
            counts.problems.append(f"{execution_id} ({want.job_id}) lost: {row}")
            continue
        status = "succeeded" if want.code == 0 else "failed"
        if (row[1], row[2]) != (status, want.code):
            counts.wrong_exit += 1
            counts.problems.append(f"{execution_id}: {row[1:3]}, wanted {status} {want.code}")
        if want.output is not None and server.output(execution_id) != want.output:
            counts.wrong_output += 1
            counts.problems.append(f"{execution_id}: output differs")
    for execution_id in alive_at_kill:
        row = rows.get(execution_id)
        if row is None:
            continue  # never recorded: ended at reconcile (ghosts are counted above)
        counts.surviving += 1
        # The exit code it was started for (also for a start whose 202 never arrived).
        code = int(json.loads(row[4] or "{}").get("Code", 0))
        if row[1] in ("succeeded", "failed") and row[2] == code:
            counts.readopted += 1
        else:
            counts.problems.append(f"{execution_id} alive at a kill ended {row}")
    counts.duplicates += sum(
        count - 1
        for (count,) in _rows(
            db,
            "SELECT count(*) FROM executions WHERE scheduled_for IS NOT NULL "
            "GROUP BY job_id, scheduled_for HAVING count(*) > 1",
        )
    )
    counts.duplicates += sum(
        count - 1
        for (count,) in _rows(
            db,
            "SELECT count(*) FROM executions WHERE idempotency_key IS NOT NULL "
            'GROUP BY "user", idempotency_key HAVING count(*) > 1',
        )
    )
    open_fires = _rows(db, "SELECT job_id, scheduled_for FROM schedule_fires WHERE outcome IS NULL")
    started_without_run = _rows(
        db,
        "SELECT f.job_id, f.scheduled_for FROM schedule_fires f LEFT JOIN executions e "
        "ON e.id = f.execution_id WHERE f.outcome = 'started' AND e.id IS NULL",
    )
    counts.open_fires = len(open_fires) + len(started_without_run)
    counts.problems += [f"fire left open: {fire}" for fire in open_fires]
    counts.problems += [f"fire started without a run: {fire}" for fire in started_without_run]
    leftover = set(job_processes(data_dir))
    if leftover:
        counts.ghosts += len(leftover - set(rows))
        counts.problems.append(f"processes left at the end: {sorted(leftover)}")

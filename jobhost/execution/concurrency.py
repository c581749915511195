"""Who may hold a process: ``max_concurrent`` per job and concurrency key, and the
settings' ``groups`` semaphores shared by jobs across apps.

A run's ``Slot`` is its job, its rendered ``concurrency_key`` (None without one) and its
``concurrency_group``. ``Slots`` counts the runs that hold a process (starting, running,
stopping) per (job, key) and per group, and keeps the runs waiting for one in arrival
order. After every release the waiting runs are scanned in order and each that fits is
admitted (``ready``), so no waiting run ever fits: a new run that fits may start at once
without passing anyone waiting for the same key or group. Test runs take no slot.

Pure bookkeeping on the event loop: ``admission.admit`` decides over ``occupancy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jobhost.catalog.definition import JobDefinition, to_text
from jobhost.catalog.policies import VARIABLE_REF
from jobhost.execution.admission import Admission, Occupancy, Policy


@dataclass(frozen=True, slots=True)
class Slot:
    job_id: str
    key: str | None  # the rendered concurrency_key
    group: str | None
    limit: int  # max_concurrent per (job, key); 0: no limit


def render_key(template: str, variables: Mapping[str, Any]) -> str:
    """``concurrency_key`` with each ``{{Name}}`` replaced by the run's value ("" if unset)."""
    return VARIABLE_REF.sub(lambda m: to_text(variables.get(m.group(1), "")), template)


def slot_of(job_id: str, definition: JobDefinition, variables: Mapping[str, Any]) -> Slot:
    key = definition.concurrency_key
    return Slot(
        job_id=job_id,
        key=None if key is None else render_key(key, variables),
        group=definition.concurrency_group,
        limit=definition.max_concurrent,
    )


def admission_of(slot: Slot, policy: Policy) -> Admission:
    return Admission(slot.job_id, policy, key=slot.key, group=slot.group)


class Slots:
    """Holders and waiters, counted per (job, key) and per group."""

    def __init__(self, groups: Callable[[], Mapping[str, int]]) -> None:
        self._groups = groups  # read at each decision: settings may change between them
        self._slot: dict[str, Slot] = {}  # execution ID → its slot (holding or waiting)
        self._holders: dict[tuple[str, str | None], dict[str, None]] = {}
        self._group_holders: dict[str, dict[str, None]] = {}
        self._waiting: dict[str, None] = {}  # execution IDs, in arrival order

    # ------------------------------------------------------------- reading
    def occupancy(self, slot: Slot, max_queue: int) -> Occupancy:
        """The input of ``admission.admit`` for a run of ``slot`` (holders only; see the
        module docstring for why waiters need not be counted)."""
        group = self._group_holders.get(slot.group, ()) if slot.group else ()
        return Occupancy(
            active=tuple(self._holders.get((slot.job_id, slot.key), ())),
            queued_total=len(self._waiting),
            max_queue=max_queue,
            group_active=len(group),
            group_limit=self._groups().get(slot.group, 0) if slot.group else 0,
        )

    def holders(self, slot: Slot) -> list[str]:
        """The runs holding a process under the same job and key."""
        return list(self._holders.get((slot.job_id, slot.key), ()))

    def waiting(self) -> int:
        return len(self._waiting)

    def place(self, slot: Slot) -> int:
        """The position a new waiter of ``slot`` would take (as ``positions`` counts)."""
        mine = shared = 0
        for waiting in self._waiting:
            other = self._slot[waiting]
            mine += (other.job_id, other.key) == (slot.job_id, slot.key)
            shared += slot.group is not None and other.group == slot.group
        return 1 + max(mine, shared)

    def position(self, execution_id: str) -> int | None:
        return next((p for i, p in self.positions() if i == execution_id), None)

    def positions(self) -> Iterator[tuple[str, int]]:
        """(execution ID, position) of every waiting run: 1 + the runs ahead of it that
        wait for the same job and key or the same group."""
        ahead: dict[tuple[str, str | None], int] = {}
        ahead_group: dict[str, int] = {}
        for execution_id in self._waiting:
            slot = self._slot[execution_id]
            mine = ahead.get((slot.job_id, slot.key), 0)
            shared = ahead_group.get(slot.group, 0) if slot.group else 0
            yield execution_id, 1 + max(mine, shared)
            ahead[(slot.job_id, slot.key)] = mine + 1
            if slot.group:
                ahead_group[slot.group] = shared + 1

    # ------------------------------------------------------------- changing
    def hold(self, execution_id: str, slot: Slot) -> None:
        """``execution_id`` holds a process from now on (it leaves the waiters)."""
        self._waiting.pop(execution_id, None)
        self._slot[execution_id] = slot
        self._holders.setdefault((slot.job_id, slot.key), {})[execution_id] = None
        if slot.group:
            self._group_holders.setdefault(slot.group, {})[execution_id] = None

    def wait(self, execution_id: str, slot: Slot) -> None:
        self._slot[execution_id] = slot
        self._waiting[execution_id] = None

    def release(self, execution_id: str) -> bool:
        """Forget ``execution_id`` (ended, or left the queue); True if it held a process."""
        slot = self._slot.pop(execution_id, None)
        if slot is None:
            return False
        if execution_id in self._waiting:
            del self._waiting[execution_id]
            return False
        held = _discard(self._holders, (slot.job_id, slot.key), execution_id)
        if slot.group:
            _discard(self._group_holders, slot.group, execution_id)
        return held

    def ready(self) -> list[str]:
        """The waiting runs that fit now, in arrival order, each made a holder. One pass:
        a key or group found full stays full for the rest of it, so a long queue behind a
        full group costs a set lookup per run."""
        admitted = []
        groups = self._groups()
        full_keys: set[tuple[str, str | None]] = set()
        full_groups: set[str] = set()
        for execution_id in list(self._waiting):
            slot = self._slot[execution_id]
            key = (slot.job_id, slot.key)
            if key in full_keys or (slot.group is not None and slot.group in full_groups):
                continue
            if slot.limit and len(self._holders.get(key, ())) >= slot.limit:
                full_keys.add(key)
                continue
            limit = groups.get(slot.group, 0) if slot.group else 0
            if limit and len(self._group_holders.get(slot.group or "", ())) >= limit:
                full_groups.add(slot.group or "")
                continue
            self.hold(execution_id, slot)
            admitted.append(execution_id)
        return admitted


def _discard(table: dict[Any, dict[str, None]], key: Any, execution_id: str) -> bool:
    members = table.get(key)
    if members is None or execution_id not in members:
        return False
    del members[execution_id]
    if not members:
        del table[key]
    return True

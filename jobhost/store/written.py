"""What this store last wrote of each live execution, so that the next write of the row
changes only the columns that differ.

A run's row is written several times (``starting``, ``running``, its end). The upsert
sets every column, and SQLite then rewrites every index entry of the row (it cannot tell
a value set to itself from a new one): a run's end wrote about 9 pages to the WAL, where
an UPDATE of the columns that changed writes 3 or 4. A live run has one writer, its
owner (nothing else touches a run whose owner is alive: a takeover only sets ``owner``),
so what that writer stored last is what the row holds; a row that is gone all the same
(no UPDATE matched) is upserted whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

MAX_ROWS = 100_000  # live runs remembered at most (beyond: forgotten, written whole)


class WrittenRows:
    """The parameters last committed for each live row of ``table``, in the order of
    ``names`` (the upsert's parameters)."""

    def __init__(self, table: sa.Table, names: Sequence[str], dialect: Any, key: str = "id"):
        self._table = table
        self._dialect = dialect
        self._names = tuple(names)
        self._key = self._names.index(key)
        self._rows: dict[str, list[Any]] = {}
        self._updates: dict[tuple[int, ...], tuple[str, tuple[int, ...]]] = {}

    def write(
        self, cursor: Any, upsert: str, values: list[list[Any]], batch: dict[str, list[Any]]
    ) -> None:
        """Write ``values`` in order on ``cursor``: an UPDATE of what changed for a row
        written before, the ``upsert`` for the others. Records them in ``batch``, to be
        ``commit``-ted once the transaction is."""
        whole: list[list[Any]] = []  # upserted together, in order with the updates
        for params in values:
            key = params[self._key]
            before = batch.get(key) or self._rows.get(key)
            batch[key] = params
            changed = () if before is None else self._changed(params, before)
            if changed:
                if whole:
                    cursor.executemany(upsert, whole)
                    whole = []
                sql, order = self._update(changed)
                cursor.execute(sql, [params[i] for i in order])
                if cursor.rowcount:
                    continue
            whole.append(params)
        if whole:
            cursor.executemany(upsert, whole)

    def commit(self, batch: dict[str, list[Any]], ended: set[str]) -> None:
        """The batch is stored; the rows of ``ended`` runs are seldom written again."""
        if len(self._rows) + len(batch) > MAX_ROWS:
            self._rows.clear()
        self._rows.update(batch)
        for key in ended:
            self._rows.pop(key, None)

    def forget(self) -> None:
        """What the rows hold is not known (a write failed): each is written whole next."""
        self._rows.clear()

    def _changed(self, params: list[Any], before: list[Any]) -> tuple[int, ...]:
        return tuple(i for i, value in enumerate(params) if value != before[i])

    def _update(self, changed: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        """The UPDATE of the ``changed`` columns (compiled once per set of columns) and the
        indexes of its parameters in a row's ``params``."""
        found = self._updates.get(changed)
        if found is None:
            names = self._names
            stmt = (
                sa.update(self._table)
                .where(self._table.c[names[self._key]] == sa.bindparam("row_key"))
                .values({names[i]: sa.bindparam(names[i]) for i in changed})
            )
            compiled = stmt.compile(dialect=self._dialect)
            index = {name: i for i, name in enumerate(names)} | {"row_key": self._key}
            found = (compiled.string, tuple(index[name] for name in compiled.positiontup or ()))
            self._updates[changed] = found
        return found

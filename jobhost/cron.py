"""Cron maths: parse an expression, and list its fire times in a time zone. Pure: no clock.

The expression syntax and field semantics are Vixie/Debian cron's (``jobhost.cronexpr``):
five fields, or six with seconds last, or a macro such as ``@hourly``.

Fire times are found on the zone's *wall clock* (where every day has 24 hours) and then
placed on the timeline, which is where daylight saving time needs care:

- A wall time that does not exist (the spring-forward gap, e.g. 02:30 on the night the
  clocks go from 02:00 to 03:00) fires once, at the first instant after the gap (03:00).
  Several fire times inside one gap collapse into that one fire.
- A wall time that happens twice (the fall-back overlap, e.g. 01:30 when 02:00 goes back
  to 01:00) fires once, at its first occurrence, when the expression names its hours; an
  expression that fires in every hour of the day (``*`` or all 24 hours in the hour field:
  ``@hourly``, every minute, every second…) keeps running through the repeated hour as
  well, since skipping an hour of an hourly job would be the surprise there.

Where this differs from Debian by design is tabled in the README ("Schedules").
All results are aware UTC datetimes, strictly increasing.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobhost.cronexpr import MACROS, Expression, parse_expression
from jobhost.errors import InvalidSchedule

__all__ = ["CronSchedule", "describe", "next_fires", "parse", "prev_fires", "problem", "zone"]

_SECOND = timedelta(seconds=1)
_NEAR = timedelta(hours=3)  # wider than any DST shift in tzdata


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; InvalidSchedule saying what to give otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC'",
            details={"field": "timezone"},  # which input a form should mark
        ) from None


def problem(expr: str) -> str | None:
    """Why ``expr`` is not a usable cron expression, or None when it is."""
    try:
        parse_expression(expr)
    except InvalidSchedule as exc:
        return exc.message
    return None


def parse(expr: str, tz: str = "UTC") -> CronSchedule:
    """A checked schedule; InvalidSchedule with the reason when ``expr`` or ``tz`` is bad."""
    if not isinstance(expr, str):
        raise InvalidSchedule(f"A cron expression must be a string, got {expr!r}")
    return _parse(expr.strip(), tz)


@functools.lru_cache(maxsize=4096)
def _parse(expr: str, tz: str) -> CronSchedule:
    return CronSchedule(parse_expression(expr), zone(tz))


def next_fires(expr: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` fire times strictly after ``after`` (aware), in UTC."""
    return parse(expr, tz).next_fires(after, count)


def prev_fires(expr: str, tz: str, before: datetime, count: int) -> list[datetime]:
    """The last ``count`` fire times at or before ``before`` (aware), newest first, in UTC."""
    return parse(expr, tz).prev_fires(before, count)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock time of ``instant`` in ``tz``."""
    return instant.astimezone(tz).replace(tzinfo=None)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression in a zone; ``next_after``/``next_fires``/``prev_fires`` do the maths."""

    expression: Expression
    tz: ZoneInfo

    @property
    def expr(self) -> str:
        return self.expression.text

    @property
    def every_hour(self) -> bool:
        return self.expression.every_hour

    def _instants(self, wall: datetime) -> list[datetime]:
        """Where the wall time ``wall`` falls on the timeline (zero-gap rule above): 1 or 2."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if _wall(first, self.tz) != wall:
            return [self._gap_end(wall)]
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if second != first and self.every_hour:
            return [first, second]
        return [first]

    def _gap_end(self, wall: datetime) -> datetime:
        """The first instant after the DST gap that swallowed ``wall``.

        zoneinfo maps a missing wall time with the offsets from either side of the
        transition; the transition itself lies between the two results.
        """
        low = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        high = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if low > high:
            low, high = high, low
        before = low.astimezone(self.tz).utcoffset()
        # Binary search on whole seconds: transitions are at whole seconds in tzdata.
        while high - low > _SECOND:
            middle = (low + (high - low) / 2).replace(microsecond=0)
            if middle.astimezone(self.tz).utcoffset() == before:
                low = middle
            else:
                high = middle
        return high

    def _margin(self, instant: datetime) -> timedelta:
        """How far wall order and timeline order can disagree around ``instant``: the size
        of a nearby offset change (0 away from transitions, so the common case is exact)."""
        early = (instant - _NEAR).astimezone(self.tz).utcoffset()
        late = (instant + _NEAR).astimezone(self.tz).utcoffset()
        if early is None or late is None:
            return timedelta(0)
        return abs(late - early)

    def _walk(self, start: datetime, forward: bool) -> Iterator[datetime]:
        """Instants in timeline order around ``start``; the callers filter the few that
        lie on the wrong side of it.

        Candidates come in wall order; near a transition the walk starts
        ``_margin`` earlier (later, backwards) and a heap puts the second occurrence of a
        repeated hour back in timeline order. Going forward, the earliest instant of each
        later wall time never decreases, so an instant is final once it is not after that
        bound (and symmetrically backwards).
        """
        margin = self._margin(start) + _SECOND
        wall = _wall(start, self.tz)
        expression = self.expression
        walls = (
            expression.walls_after(wall - margin)
            if forward
            else expression.walls_before(wall + margin)
        )
        sign = 1 if forward else -1
        pending: list[tuple[float, datetime]] = []
        last: datetime | None = None
        for candidate in walls:
            instants = self._instants(candidate)
            bound = sign * (min(instants) if forward else max(instants)).timestamp()
            for instant in instants:
                heapq.heappush(pending, (sign * instant.timestamp(), instant))
            while pending and pending[0][0] <= bound:
                _, value = heapq.heappop(pending)
                if value != last:  # a gap's several wall times land on one instant
                    last = value
                    yield value
        while pending:
            _, value = heapq.heappop(pending)
            if value != last:
                last = value
                yield value

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after``; None when it never fires again."""
        for instant in self._walk(after, forward=True):
            if instant > after:
                return instant
        return None

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        """The first ``count`` fire times strictly after ``after``."""
        found: list[datetime] = []
        if count <= 0:
            return found
        for instant in self._walk(after, forward=True):
            if instant > after:
                found.append(instant)
                if len(found) >= count:
                    break
        return found

    def prev_fires(self, before: datetime, count: int) -> list[datetime]:
        """The last ``count`` fire times at or before ``before``, newest first."""
        found: list[datetime] = []
        if count <= 0:
            return found
        for instant in self._walk(before, forward=False):
            if instant <= before:
                found.append(instant)
                if len(found) >= count:
                    break
        return found

    def between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Fire times in ``(after, until]``, at most the newest ``limit``, oldest first."""
        newest: list[datetime] = []
        if limit <= 0:
            return newest
        for instant in self._walk(until, forward=False):
            if instant <= after:
                break
            if instant <= until:
                newest.append(instant)
                if len(newest) >= limit:
                    break
        return newest[::-1]


@functools.lru_cache(maxsize=1024)
def describe(expr: str, tz: str) -> str:
    """The expression in words, with its zone: "At 04:00, Monday through Friday, Europe/Berlin".

    Six-field expressions are read with seconds last, as JobHost does, so the words never
    disagree with the fires; an expression the describer cannot word is given as is.
    """
    from cron_descriptor import ExpressionDescriptor, Options  # only the API and CLI need it

    expression = parse_expression(expr.strip())
    fields = MACROS.get(expression.text.lower(), expression.text).split()
    if len(fields) == 6:
        fields = [fields[5], *fields[:5]]
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        words = str(ExpressionDescriptor(" ".join(fields), options).get_description())
    except Exception:  # a form the describer lacks (e.g. "L5"): the expression itself
        words = f"Cron {expression.text!r}"
    if expression.days_and:
        # The describer reads both day fields as "or" (Quartz); cron ANDs them here.
        words = words.replace(", or on ", ", and only on ")
    return f"{words}, {tz}"

"""Cron expressions: parse one into field sets (Vixie/Debian semantics) and walk its wall times.

Pure: no clock, no zone. ``jobhost.cron`` places the wall times on a zone's timeline.

The syntax is Vixie cron's, as Debian ships it, with the usual extensions:

- Five fields ``minute hour day-of-month month day-of-week``, or six with **seconds
  last** (``*/5 * * * * 30`` = second 30 of every fifth minute); or a macro
  (``@hourly @daily @midnight @weekly @monthly @yearly @annually``).
- Each field is a list of ``*``, ``N``, ``N-M`` (low to high; ``N-N`` is just ``N``),
  each optionally ``/S``; ``N/S`` means ``N-<max>/S``. Month and weekday names
  (``JAN``…, ``SUN``…) in any case; weekday 0 and 7 are both Sunday.
- Day-of-month also takes ``L`` (last day), ``LW`` (last weekday) and ``NW`` (the
  weekday nearest day N, within the month); day-of-week takes ``N#K`` (the K-th
  weekday N of the month, K 1-5) and ``NL`` or ``LN`` (the last weekday N).
- Days: when day-of-month or day-of-week *starts with* ``*``, a day must match both;
  when both are restricted, either one (Vixie's rule: ``0 0 */2 * MON`` is Mondays
  that fall on odd days, ``0 0 1 * MON`` is the 1st and every Monday).

Rejected with a message naming the field and the fix: reverse ranges, ``?``, random
values (``R``/``H``), steps of 0, values out of range, and expressions that never fire.
"""

from __future__ import annotations

import calendar
import functools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from jobhost.errors import InvalidSchedule

__all__ = ["MACROS", "Expression", "parse_expression"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name, low, high, names (value of the first name), plural for messages
_SPECS = {
    "second": (0, 59, None, "seconds"),
    "minute": (0, 59, None, "minutes"),
    "hour": (0, 23, None, "hours"),
    "day-of-month": (1, 31, None, "days of the month"),
    "month": (1, 12, (_MONTHS, 1), "months"),
    "day-of-week": (0, 7, (_DAYS, 0), "weekdays (0 and 7 are Sunday)"),
}
# A calendar repeats every 400 years: what does not fire within them never fires.
_CYCLE_YEARS = 400
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
_LAST_SECOND = time(23, 59, 59)


class _Bad(Exception):
    """A field problem; the parser adds the field and expression to its text."""


@functools.lru_cache(maxsize=512)
def _month(year: int, month: int) -> tuple[int, int]:
    """(weekday of the 1st with Monday 0, number of days)."""
    return calendar.monthrange(year, month)


def _cron_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7  # Sunday 0


def _nearest_weekday(year: int, month: int, wanted: int) -> int:
    """The day of the month of the weekday nearest day ``wanted``, without leaving the
    month (Quartz's ``W``); a day past the month's end counts as its last day."""
    first, length = _month(year, month)
    day = min(wanted, length)
    weekday = (first + day - 1) % 7  # Monday 0
    if weekday == 5:  # Saturday: Friday before, or Monday after on the 1st
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday: Monday after, or Friday before at the month's end
        return day + 1 if day < length else day - 2
    return day


@dataclass(frozen=True)
class Expression:
    """A parsed expression: the set of each field, plus the day specials."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0-6, Sunday 0
    last_day: bool = False  # L
    last_weekday: bool = False  # LW
    nearest: frozenset[int] = frozenset()  # NW
    nth: frozenset[tuple[int, int]] = frozenset()  # N#K: (weekday, K)
    last_of: frozenset[int] = frozenset()  # NL: weekday
    days_and: bool = True  # a day field starts with '*'

    @property
    def every_hour(self) -> bool:
        """Fires in every hour of the day (``*`` or a list covering all 24)."""
        return len(self.hours) == 24

    def _dom(self, day: date) -> bool:
        if day.day in self.days:
            return True
        if not (self.last_day or self.last_weekday or self.nearest):
            return False
        length = _month(day.year, day.month)[1]
        if self.last_day and day.day == length:
            return True
        if self.last_weekday and day.day == _nearest_weekday(day.year, day.month, length):
            return True
        return any(day.day == _nearest_weekday(day.year, day.month, n) for n in self.nearest)

    def _dow(self, day: date) -> bool:
        weekday = _cron_weekday(day)
        if weekday in self.weekdays:
            return True
        if (weekday, (day.day - 1) // 7 + 1) in self.nth:
            return True
        if weekday in self.last_of:
            return day.day + 7 > _month(day.year, day.month)[1]
        return False

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.days_and:
            return self._dom(day) and self._dow(day)
        return self._dom(day) or self._dow(day)

    # -------------------------------------------------------------- wall times
    def _first_time(self, floor: time) -> time | None:
        """The earliest fire time of a day at or after ``floor``."""
        for hour in self.hours[bisect_left(self.hours, floor.hour) :]:
            minutes = self.minutes
            if hour == floor.hour:
                minutes = minutes[bisect_left(minutes, floor.minute) :]
            for minute in minutes:
                seconds = self.seconds
                if hour == floor.hour and minute == floor.minute:
                    seconds = seconds[bisect_left(seconds, floor.second) :]
                if seconds:
                    return time(hour, minute, seconds[0])
        return None

    def _last_time(self, ceiling: time) -> time | None:
        """The latest fire time of a day at or before ``ceiling``."""
        for hour in reversed(self.hours[: bisect_right(self.hours, ceiling.hour)]):
            minutes = self.minutes
            if hour == ceiling.hour:
                minutes = minutes[: bisect_right(minutes, ceiling.minute)]
            for minute in reversed(minutes):
                seconds = self.seconds
                if hour == ceiling.hour and minute == ceiling.minute:
                    seconds = seconds[: bisect_right(seconds, ceiling.second)]
                if seconds:
                    return time(hour, minute, seconds[-1])
        return None

    def _days(self, start: date, forward: bool) -> Iterator[date]:
        """Matching days from ``start`` (included), within one calendar cycle."""
        limit = start.year + (_CYCLE_YEARS if forward else -_CYCLE_YEARS)
        day = start
        try:
            while (day.year <= limit) if forward else (day.year >= limit):
                if day.month not in self.months:
                    # Jump to the next (previous) month's first (last) day.
                    if forward:
                        day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
                    else:
                        day = day.replace(day=1) - _DAY
                    continue
                if self.matches_day(day):
                    yield day
                day = day + _DAY if forward else day - _DAY
        except OverflowError:  # past year 1 or 9999: nothing more to find
            return

    def walls_after(self, after: datetime) -> Iterator[datetime]:
        """Naive wall times strictly after ``after``, ascending."""
        start = after.replace(microsecond=0) + _SECOND
        for day in self._days(start.date(), forward=True):
            floor = start.time() if day == start.date() else time.min
            while (at := self._first_time(floor)) is not None:
                yield datetime.combine(day, at)
                if at == _LAST_SECOND:
                    break
                floor = (datetime.combine(day, at) + _SECOND).time()

    def walls_before(self, before: datetime) -> Iterator[datetime]:
        """Naive wall times strictly before ``before``, descending."""
        start = before.replace(microsecond=0)
        try:
            if start == before:
                start -= _SECOND
        except OverflowError:
            return
        for day in self._days(start.date(), forward=False):
            ceiling = start.time() if day == start.date() else _LAST_SECOND
            while (at := self._last_time(ceiling)) is not None:
                yield datetime.combine(day, at)
                if at == time.min:
                    break
                ceiling = (datetime.combine(day, at) - _SECOND).time()


# ------------------------------------------------------------------ parsing
def _value(text: str, name: str) -> int:
    low, high, names, plural = _SPECS[name]
    upper = text.upper()
    if names is not None and upper in names[0]:
        return names[0].index(upper) + names[1]
    if upper in {"R", "H"}:
        raise _Bad(
            f"{text!r} (a random value) is not supported: JobHost would pick a new one at "
            f"every start; write a fixed value such as {low + (high - low) // 3}"
        )
    if upper == "?":
        raise _Bad("'?' is not supported; write '*' (any)")
    if not text.isascii() or not text.isdigit():
        hint = f" or a name such as {names[0][0]}" if names is not None else ""
        raise _Bad(f"{text!r} is not a number{hint}; {plural} are {low}-{high}")
    number = int(text)
    if not low <= number <= high:
        raise _Bad(f"{number} is out of range; {plural} are {low}-{high}")
    return number


def _term(text: str, name: str) -> set[int]:
    low, high, _, _ = _SPECS[name]
    span, slash, step_text = text.partition("/")
    step = 1
    if slash:
        if not step_text.isascii() or not step_text.isdigit() or int(step_text) == 0:
            raise _Bad(f"step {step_text!r} in {text!r} must be a whole number of at least 1")
        step = int(step_text)
    if span == "*":
        first, last = low, high
    elif "-" in span:
        left, _, right = span.partition("-")
        first, last = _value(left, name), _value(right, name)
        if first > last:
            raise _Bad(
                f"range {span!r} goes backwards; write it low to high ({right}-{left}), "
                f"or as two ranges to wrap ({left}-{high},{low}-{right})"
            )
    else:
        first = _value(span, name)
        last = high if slash else first
    return set(range(first, last + 1, step))


def _field(text: str, name: str) -> set[int]:
    if not text:
        raise _Bad("is empty")
    values: set[int] = set()
    for term in text.split(","):
        if not term:
            raise _Bad(f"{text!r} has an empty list item; separate values with single commas")
        values |= _term(term, name)
    return values


def _specials_dom(text: str) -> tuple[set[int], bool, bool, set[int]]:
    days: set[int] = set()
    last = last_weekday = False
    nearest: set[int] = set()
    for term in text.split(","):
        upper = term.upper()
        if upper == "L":
            last = True
        elif upper == "LW":
            last_weekday = True
        elif upper.endswith("W") and len(upper) > 1:
            nearest.add(_value(upper[:-1], "day-of-month"))
        else:
            days |= _field(term, "day-of-month")
    return days, last, last_weekday, nearest


def _specials_dow(text: str) -> tuple[set[int], set[tuple[int, int]], set[int]]:
    weekdays: set[int] = set()
    nth: set[tuple[int, int]] = set()
    last_of: set[int] = set()
    for term in text.split(","):
        upper = term.upper()
        if "#" in upper:
            left, _, right = upper.partition("#")
            if right not in {"1", "2", "3", "4", "5"}:
                raise _Bad(f"{term!r}: the week after '#' must be 1-5 (e.g. 'FRI#3')")
            nth.add((_value(left, "day-of-week") % 7, int(right)))
        elif len(upper) > 1 and (upper.endswith("L") or upper.startswith("L")):
            body = upper[:-1] if upper.endswith("L") else upper[1:]
            last_of.add(_value(body, "day-of-week") % 7)
        else:
            weekdays |= {day % 7 for day in _field(term, "day-of-week")}
    return weekdays, nth, last_of


def _named(name: str, text: str, problem: str) -> str:
    return (
        f"{name} field {text!r}: {problem}" if problem != "is empty" else f"{name} field is empty"
    )


@functools.lru_cache(maxsize=4096)
def parse_expression(expr: str) -> Expression:
    """The parsed expression; InvalidSchedule naming the field and the fix otherwise."""
    text = expr.strip()
    if not text:
        raise InvalidSchedule("Cron expression is empty: give five fields, e.g. '0 4 * * *'")
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise InvalidSchedule(
                f"Unknown cron macro {text!r}; use one of {', '.join(sorted(MACROS))}"
            )
        fields = macro.split()
    else:
        fields = text.split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"Cron expression {text!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (with seconds last)"
        )
    seconds_text = fields[5] if len(fields) == 6 else "0"
    current = "second"
    field_text = seconds_text
    try:
        seconds = _field(seconds_text, "second")
        parts: dict[str, set[int]] = {}
        for current, field_text in zip(
            ("minute", "hour", "month"), (fields[0], fields[1], fields[3]), strict=True
        ):
            parts[current] = _field(field_text, current)
        current, field_text = "day-of-month", fields[2]
        days, last, last_weekday, nearest = _specials_dom(field_text)
        current, field_text = "day-of-week", fields[4]
        weekdays, nth, last_of = _specials_dow(field_text)
    except _Bad as exc:
        raise InvalidSchedule(
            f"Invalid cron expression {text!r}: {_named(current, field_text, str(exc))}"
        ) from None
    parsed = Expression(
        text=text,
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(parts["minute"])),
        hours=tuple(sorted(parts["hour"])),
        days=frozenset(days),
        months=frozenset(parts["month"]),
        weekdays=frozenset(weekdays),
        last_day=last,
        last_weekday=last_weekday,
        nearest=frozenset(nearest),
        nth=frozenset(nth),
        last_of=frozenset(last_of),
        days_and=fields[2].startswith("*") or fields[4].startswith("*"),
    )
    if next(parsed.walls_after(datetime(2000, 1, 1)), None) is None:
        raise InvalidSchedule(
            f"Cron expression {text!r} never fires: no date matches its day-of-month, "
            "month and day-of-week together (e.g. 31 in a month of 30 days); "
            "check those three fields"
        )
    return parsed

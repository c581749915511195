"""JobHost's next fires against an independent Vixie/Debian cron model, over a seeded corpus.

The model below shares no code with ``jobhost.cron``: it expands each field the way
Vixie's ``entry.c`` does, matches days with Vixie's AND/OR rule, and finds fire times by
brute force (every day, then every minute of a matching day). For daylight saving time it
follows Debian's rule for fixed-time jobs (one run at the first instant after a
spring-forward gap, one run at the first occurrence of a repeated wall time), which is
also JobHost's; the cases where JobHost differs from Debian by design (README,
"Schedules") are left out of the DST corpus.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobhost.cron import next_fires
from jobhost.errors import InvalidSchedule

SEED = 20260125
COUNT = 5
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
BOUNDS = {"sec": (0, 59), "min": (0, 59), "hour": (0, 23), "dom": (1, 31), "mon": (1, 12)}
BOUNDS["dow"] = (0, 7)


# ---------------------------------------------------------------- the model
def _number(text: str, kind: str) -> int:
    upper = text.upper()
    if kind == "mon" and upper in MONTHS:
        return MONTHS.index(upper) + 1
    if kind == "dow" and upper in DAYS:
        return DAYS.index(upper)
    return int(text)


def model_field(text: str, kind: str) -> set[int]:
    low, high = BOUNDS[kind]
    found: set[int] = set()
    for item in text.split(","):
        body, _, step = item.partition("/")
        by = int(step) if step else 1
        if body == "*":
            a, b = low, high
        elif "-" in body:
            left, right = body.split("-")
            a, b = _number(left, kind), _number(right, kind)
        else:
            a = _number(body, kind)
            b = high if step else a
        found.update(v for v in range(a, b + 1) if (v - a) % by == 0)
    if kind == "dow":
        found = {v % 7 for v in found}
    return found


def _weekday(d: date) -> int:
    return d.isoweekday() % 7


def _nearest_weekday(d: date, n: int) -> int:
    length = calendar.monthrange(d.year, d.month)[1]
    target = date(d.year, d.month, min(n, length))
    if _weekday(target) == 6:
        return target.day - 1 if target.day > 1 else target.day + 2
    if _weekday(target) == 0:
        return target.day + 1 if target.day < length else target.day - 2
    return target.day


def _dom_special(d: date, special: str) -> bool:
    length = calendar.monthrange(d.year, d.month)[1]
    if special == "L":
        return d.day == length
    if special == "LW":
        return d.day == _nearest_weekday(d, length)
    return d.day == _nearest_weekday(d, int(special[:-1]))


def _dow_special(d: date, special: str) -> bool:
    if "#" in special:
        day, nth = special.split("#")
        return _weekday(d) == _number(day, "dow") % 7 and (d.day + 6) // 7 == int(nth)
    length = calendar.monthrange(d.year, d.month)[1]
    return _weekday(d) == _number(special[:-1], "dow") % 7 and d.day > length - 7


def model_day_matcher(dom_text: str, dow_text: str) -> Callable[[date], bool]:
    """Vixie's day rule, with L, LW, NW, N#K and NL in their Quartz meaning."""
    plain_dom = [t for t in dom_text.split(",") if not t.upper().endswith(("L", "W"))]
    plain_dow = [t for t in dow_text.split(",") if "#" not in t and not t.upper().endswith("L")]
    doms = model_field(",".join(plain_dom), "dom") if plain_dom else set()
    dows = model_field(",".join(plain_dow), "dow") if plain_dow else set()
    dom_specials = [t.upper() for t in dom_text.split(",") if t not in plain_dom]
    dow_specials = [t.upper() for t in dow_text.split(",") if t not in plain_dow]

    def dom_ok(d: date) -> bool:
        return d.day in doms or any(_dom_special(d, s) for s in dom_specials)

    def dow_ok(d: date) -> bool:
        return _weekday(d) in dows or any(_dow_special(d, s) for s in dow_specials)

    if dom_text.startswith("*") or dow_text.startswith("*"):
        return lambda d: dom_ok(d) and dow_ok(d)
    return lambda d: dom_ok(d) or dow_ok(d)


def model_walls(expr: str, start: datetime, count: int, years: int = 30) -> list[datetime]:
    """The first ``count`` naive wall times strictly after ``start``, by brute force."""
    parts = expr.split()
    seconds = sorted(model_field(parts[5], "sec")) if len(parts) == 6 else [0]
    minutes = model_field(parts[0], "min")
    hours = model_field(parts[1], "hour")
    months = model_field(parts[3], "mon")
    day_ok = model_day_matcher(parts[2], parts[4])
    found: list[datetime] = []
    day = start.date()
    while len(found) < count and day.year <= start.year + years:
        if day.month in months and day_ok(day):
            for minute_of_day in range(1440):
                hour, minute = divmod(minute_of_day, 60)
                if hour in hours and minute in minutes:
                    for second in seconds:
                        at = datetime(day.year, day.month, day.day, hour, minute, second)
                        if at > start and len(found) < count:
                            found.append(at)
        day += timedelta(days=1)
    return found


def model_fixed_in_zone(expr: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """Debian's rule for fixed-time jobs around DST, on the model's wall times."""
    start = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
    instants: list[datetime] = []
    for wall in model_walls(expr, start, count + 8):
        probe = wall
        while probe.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != probe:
            probe += timedelta(minutes=1)  # inside a gap: the first wall time after it
        instant = probe.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant > after and instant not in instants:
            instants.append(instant)
    return sorted(instants)[:count]


# ---------------------------------------------------------------- the corpus
def _value(rng: random.Random, kind: str) -> str:
    low, high = BOUNDS[kind]
    number = rng.randint(low, min(high, 6) if kind == "dow" else high)
    if kind == "mon" and rng.random() < 0.3:
        return MONTHS[number - 1]
    if kind == "dow" and rng.random() < 0.3:
        return DAYS[number % 7]
    return str(number)


def _term(rng: random.Random, kind: str) -> str:
    low, high = BOUNDS[kind]
    shape = rng.random()
    if shape < 0.25:
        return _value(rng, kind)
    if shape < 0.5:
        a = rng.randint(low, high - 1 if kind != "dow" else 6)
        b = rng.choice([a, rng.randint(a, high if kind != "dow" else 6)])  # N-N included
        return f"{a}-{b}" + (f"/{rng.randint(1, 5)}" if rng.random() < 0.3 else "")
    if shape < 0.7:
        return f"*/{rng.randint(2, 12)}"
    if shape < 0.8 and kind != "dow":  # weekday N/S has no Vixie meaning
        return f"{rng.randint(low, high)}/{rng.randint(2, 15)}"
    return ",".join(_value(rng, kind) for _ in range(rng.randint(2, 3)))


def _field(rng: random.Random, kind: str, star: float) -> str:
    return "*" if rng.random() < star else _term(rng, kind)


def corpus(size: int) -> list[tuple[str, str, datetime]]:
    rng = random.Random(SEED)
    cases: list[tuple[str, str, datetime]] = []
    zones = ["UTC", "Asia/Kolkata"]  # no DST: the field semantics alone
    for _ in range(size):
        fields = [
            _field(rng, "min", 0.2),
            _field(rng, "hour", 0.4),
            _field(rng, "dom", 0.5),
            _field(rng, "mon", 0.6),
            _field(rng, "dow", 0.5),
        ]
        if rng.random() < 0.1:
            fields.append(_field(rng, "sec", 0.3))
        if rng.random() < 0.05:
            fields[2] = rng.choice(["L", "LW", "15W", "1W", "31W"])
        elif rng.random() < 0.05:
            fields[4] = rng.choice(["5#3", "MON#1", "1#5", "5L", "0L"])
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 2 * 525600))
        cases.append((" ".join(fields), rng.choice(zones), start))
    return cases


def test_next_fires_agree_with_the_vixie_model_over_a_seeded_corpus() -> None:
    mismatches: list[str] = []
    judged = rejected = 0
    for expr, tz_name, start in corpus(3000):
        tz = ZoneInfo(tz_name)
        wall_start = start.astimezone(tz).replace(tzinfo=None)
        try:
            got = next_fires(expr, tz_name, start, COUNT)
        except InvalidSchedule as exc:
            rejected += 1
            if "never fires" not in exc.message or model_walls(expr, wall_start, 1):
                mismatches.append(f"{expr!r} rejected: {exc.message}")
            continue
        judged += 1
        expected = [
            w.replace(tzinfo=tz).astimezone(UTC) for w in model_walls(expr, wall_start, COUNT)
        ]
        if got[: len(expected)] != expected:
            mismatches.append(
                f"{expr!r} {tz_name} after {start:%Y-%m-%dT%H:%M}Z: {got} != {expected}"
            )
    assert judged > 2500
    assert mismatches == [], f"{len(mismatches)} of {judged + rejected}: " + "\n".join(
        mismatches[:10]
    )


# Fixed-time jobs (single minute and hour) near the 2026-2027 transitions.
_TRANSITIONS = {
    "America/New_York": ["2026-03-08", "2026-11-01", "2027-03-14", "2027-11-07"],
    "Europe/Berlin": ["2026-03-29", "2026-10-25", "2027-03-28", "2027-10-31"],
    "Australia/Lord_Howe": ["2026-04-05", "2026-10-04", "2027-04-04", "2027-10-03"],
}


def test_fixed_time_jobs_around_dst_agree_with_debian() -> None:
    rng = random.Random(SEED + 1)
    mismatches: list[str] = []
    for _ in range(600):
        tz_name = rng.choice(sorted(_TRANSITIONS))
        tz = ZoneInfo(tz_name)
        day = date.fromisoformat(rng.choice(_TRANSITIONS[tz_name]))
        hour = rng.randint(0, 4)
        minute = rng.choice([0, 15, 30, 45, rng.randint(0, 59)])
        dom = rng.choice(["*", "*", f"{day.day}", f"{day.day}-{day.day}"])
        expr = f"{minute} {hour} {dom} * *"
        wall = datetime(day.year, day.month, day.day) - timedelta(minutes=rng.randint(1, 4 * 60))
        after = wall.replace(tzinfo=tz).astimezone(UTC)
        got = next_fires(expr, tz_name, after, 3)
        expected = model_fixed_in_zone(expr, tz, after, 3)
        if got != expected:
            mismatches.append(f"{expr!r} {tz_name} after {after}: {got} != {expected}")
    assert mismatches == [], f"{len(mismatches)}: " + "\n".join(mismatches[:10])


@pytest.mark.parametrize(
    ("expr", "first"),
    [
        ("0 9-9 * * *", ["2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00"]),
        ("0 0 */2 * MON", ["2026-01-05T00:00:00+00:00", "2026-01-19T00:00:00+00:00"]),
        ("0 0 1 * MON", ["2026-01-01T00:00:00+00:00", "2026-01-05T00:00:00+00:00"]),
        ("0 0 * 2 MON#5", ["2044-02-29T00:00:00+00:00", "2072-02-29T00:00:00+00:00"]),
    ],
)
def test_known_vixie_answers(expr: str, first: list[str]) -> None:
    got = next_fires(expr, "UTC", datetime(2025, 12, 31, 12, tzinfo=UTC), 2)
    assert [when.isoformat() for when in got] == first

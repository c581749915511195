"""Cron maths: fire times in a zone, DST both ways, month ends, leap days, seconds, macros."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobhost.cron import next_fires, parse, prev_fires, zone
from jobhost.errors import InvalidSchedule


def local(expr: str, tz: str, after: datetime, count: int) -> list[str]:
    """Fire times as local ISO strings (offset shown), which is how a user reads them."""
    return [when.astimezone(zone(tz)).isoformat() for when in next_fires(expr, tz, after, count)]


def test_daily_job_in_the_spring_forward_gap_runs_once_right_after_the_gap() -> None:
    # 2024-03-10: New York goes from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    after = datetime(2024, 3, 9, 12, tzinfo=UTC)
    assert local("30 2 * * *", "America/New_York", after, 3) == [
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
    ]


def test_daily_job_in_the_fall_back_overlap_runs_once() -> None:
    # 2024-11-03: New York goes from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
    after = datetime(2024, 11, 2, 12, tzinfo=UTC)
    assert local("30 1 * * *", "America/New_York", after, 3) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
        "2024-11-05T01:30:00-05:00",
    ]


def test_berlin_both_transitions() -> None:
    spring = datetime(2024, 3, 30, 12, tzinfo=UTC)
    assert local("30 2 * * *", "Europe/Berlin", spring, 2) == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
    ]
    autumn = datetime(2024, 10, 26, 12, tzinfo=UTC)
    assert local("30 2 * * *", "Europe/Berlin", autumn, 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]


def test_hourly_job_keeps_running_through_the_repeated_hour() -> None:
    after = datetime(2024, 11, 3, 4, tzinfo=UTC)  # 00:00 EDT
    assert local("30 * * * *", "America/New_York", after, 4) == [
        "2024-11-03T00:30:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:30:00-05:00",
        "2024-11-03T02:30:00-05:00",
    ]


def test_frequent_job_collapses_the_gap_into_one_fire() -> None:
    after = datetime(2024, 3, 10, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert local("*/20 * * * *", "America/New_York", after, 4) == [
        "2024-03-10T01:40:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T03:20:00-04:00",
        "2024-03-10T03:40:00-04:00",
    ]


def test_every_second_across_both_transitions_is_strictly_increasing_without_holes() -> None:
    spring = next_fires(
        "* * * * * *", "America/New_York", datetime(2024, 3, 10, 6, 59, 58, tzinfo=UTC), 3
    )
    assert [w.isoformat() for w in spring] == [
        "2024-03-10T06:59:59+00:00",
        "2024-03-10T07:00:00+00:00",
        "2024-03-10T07:00:01+00:00",
    ]
    autumn = next_fires(
        "* * * * * *", "America/New_York", datetime(2024, 11, 3, 5, 59, 58, tzinfo=UTC), 3
    )
    assert [w.isoformat() for w in autumn] == [
        "2024-11-03T05:59:59+00:00",
        "2024-11-03T06:00:00+00:00",
        "2024-11-03T06:00:01+00:00",
    ]


def test_the_31st_skips_short_months() -> None:
    after = datetime(2024, 1, 31, 12, tzinfo=UTC)
    assert local("0 9 31 * *", "UTC", after, 3) == [
        "2024-03-31T09:00:00+00:00",
        "2024-05-31T09:00:00+00:00",
        "2024-07-31T09:00:00+00:00",
    ]


def test_leap_day_fires_only_in_leap_years() -> None:
    after = datetime(2024, 3, 1, tzinfo=UTC)
    assert local("0 0 29 2 *", "UTC", after, 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


def test_the_sixth_field_is_seconds() -> None:
    after = datetime(2024, 1, 1, tzinfo=UTC)
    assert local("*/5 * * * * 30", "UTC", after, 2) == [
        "2024-01-01T00:00:30+00:00",
        "2024-01-01T00:05:30+00:00",
    ]


@pytest.mark.parametrize(
    ("macro", "first"),
    [
        ("@hourly", "2024-05-15T11:00:00+02:00"),
        ("@daily", "2024-05-16T00:00:00+02:00"),
        ("@midnight", "2024-05-16T00:00:00+02:00"),
        ("@weekly", "2024-05-19T00:00:00+02:00"),
        ("@monthly", "2024-06-01T00:00:00+02:00"),
        ("@yearly", "2025-01-01T00:00:00+01:00"),
    ],
)
def test_macros_in_a_zone(macro: str, first: str) -> None:
    after = datetime(2024, 5, 15, 8, 30, tzinfo=UTC)  # 10:30 in Berlin
    assert local(macro, "Europe/Berlin", after, 1) == [first]


def test_a_fire_exactly_at_after_is_not_repeated() -> None:
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert next_fires("0 12 * * *", "UTC", at, 1) == [datetime(2024, 1, 2, 12, tzinfo=UTC)]


def test_prev_fires_include_the_bound_newest_first() -> None:
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert prev_fires("0 */6 * * *", "UTC", at, 3) == [
        datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime(2024, 1, 1, 6, tzinfo=UTC),
        datetime(2024, 1, 1, 0, tzinfo=UTC),
    ]


def test_between_is_half_open_and_bounded() -> None:
    schedule = parse("* * * * * *", "UTC")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    until = datetime(2024, 1, 2, tzinfo=UTC)
    newest = schedule.between(start, until, 3)
    assert newest == [
        datetime(2024, 1, 1, 23, 59, 58, tzinfo=UTC),
        datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC),
        until,
    ]


@pytest.mark.parametrize(
    "expr", ["0 0 30 2 *", "0 0 31 4-4 *", "0 0 31 6,9,11 *", "0 0 31 FEB *", "0 0 31 2 * 0"]
)
def test_an_expression_that_never_fires_is_rejected(expr: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse(expr, "UTC")
    assert caught.value.message == (
        f"Cron expression {expr!r} never fires: no date matches its day-of-month, month and "
        "day-of-week together (e.g. 31 in a month of 30 days); check those three fields"
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "Cron expression is empty"),
        ("* * *", "has 3 fields; expected 5 (minute hour day-of-month month day-of-week) or 6"),
        ("@sometimes", "Unknown cron macro '@sometimes'; use one of @annually"),
        ("61 * * * *", "Invalid cron expression '61 * * * *'"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse(expr, "UTC")
    assert message in caught.value.message
    assert caught.value.status_code == 422


def test_bad_zone_says_what_to_give() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse("@daily", "Mars/Olympus")
    assert caught.value.message == (
        "Unknown time zone 'Mars/Olympus': use an IANA name such as 'Europe/Berlin', "
        "'America/New_York' or 'UTC'"
    )

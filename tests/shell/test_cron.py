"""The 5-field cron parser: syntax, per-field ranges, and next_after on the wall clock."""

from datetime import datetime, timezone

import pytest

from ringmesh.core.cron import CronError, next_after, parse_cron


def dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


@pytest.mark.parametrize(
    "expr, after, expected",
    [
        ("0 */6 * * *", "2024-01-01 05:59", "2024-01-01 06:00"),
        ("0 */6 * * *", "2024-01-01 06:00", "2024-01-01 12:00"),  # strictly after
        ("0 */6 * * *", "2024-01-01 06:00:30", "2024-01-01 12:00"),  # seconds dropped
        ("0 */6 * * *", "2024-12-31 18:00", "2025-01-01 00:00"),  # year rollover
        ("* * * * *", "2024-01-01 10:00:59", "2024-01-01 10:01"),
        ("*/15 9-17 * * *", "2024-01-01 17:45", "2024-01-02 09:00"),
        ("30 2 * * 1-5", "2024-01-05 03:00", "2024-01-08 02:30"),  # Friday -> Monday
        ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),  # leap day
        ("0 0 29 2 *", "2096-03-01 00:00", "2104-02-29 00:00"),  # 2100 is not a leap year
        ("0 0 1,15 * 0", "2024-01-02 00:00", "2024-01-07 00:00"),  # dom OR dow: Sunday the 7th
        ("0 0 1,15 * 0", "2024-01-08 00:00", "2024-01-14 00:00"),
        ("0 0 */10 * *", "2024-01-21 00:00", "2024-01-31 00:00"),  # 1, 11, 21, 31
        ("0 12 * * 7", "2024-01-01 00:00", "2024-01-07 12:00"),  # 7 is Sunday too
        ("5/20 * * * *", "2024-01-01 10:26", "2024-01-01 10:45"),  # a/n: from a to the end
        ("0-10/5,58 23 31 12 *", "2024-12-31 23:10", "2024-12-31 23:58"),
        ("0 0 31 * *", "2024-04-15 00:00", "2024-05-31 00:00"),  # skips 30-day April
    ],
)
def test_next_after(expr, after, expected):
    assert next_after(expr, dt(after)) == dt(expected)


def test_next_after_keeps_tzinfo_and_matches():
    c = parse_cron("0 */6 * * *")
    t = c.next_after(datetime(2024, 1, 1, 1, 2, tzinfo=timezone.utc))
    assert t == datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc) and c.matches(t) and not c.matches(t.replace(hour=7))


@pytest.mark.parametrize(
    "expr, message",
    [
        ("* * * *", r"expected 5 fields .* got 4"),
        ("* * * * * *", r"expected 5 fields .* got 6"),
        ("", r"expected 5 fields"),
        ("60 * * * *", r"minute: 60 is out of range 0-59"),
        ("* 24 * * *", r"hour: 24 is out of range 0-23"),
        ("* * 0 * *", r"day-of-month: 0 is out of range 1-31"),
        ("* * * 13 *", r"month: 13 is out of range 1-12"),
        ("* * * * 8", r"day-of-week: 8 is out of range 0-7"),
        ("*/0 * * * *", r"minute: step '0' .* must be a whole number >= 1"),
        ("*/x * * * *", r"minute: step 'x'"),
        ("5-1 * * * *", r"minute: range '5-1' runs backwards"),
        ("a * * * *", r"minute: 'a' is not a number"),
        ("0 0 * jan *", r"month: 'jan' is not a number"),
        ("1,,2 * * * *", r"minute: empty list element"),
        ("-1 * * * *", r"minute: '' is not a number"),
        ("0 0 30 2 *", r"day-of-month '30' never occurs in month '2'"),
        ("0 0 31 4,6,9,11 *", r"never occurs"),
    ],
)
def test_bad_expressions(expr, message):
    with pytest.raises(CronError, match=message):
        parse_cron(expr)


def test_not_a_string():
    with pytest.raises(CronError, match="expected a string"):
        parse_cron(6)


def test_every_intervals():
    from datetime import datetime, timedelta

    from ringmesh.core.cron import CronError, Every, parse_cron

    e = parse_cron("@every 2s")
    assert isinstance(e, Every) and e.seconds == 2
    t = datetime(2026, 1, 1)
    assert e.next_after(t) == t + timedelta(seconds=2)
    assert parse_cron("@every 6h").seconds == 6 * 3600
    for bad in ("@every", "@every 0s", "@every 5 parsecs", "@every -1m"):
        with pytest.raises(CronError):
            parse_cron(bad)

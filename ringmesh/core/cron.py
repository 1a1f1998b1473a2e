"""A small, pure 5-field cron expression parser: `minute hour day-of-month month day-of-week`.

Each field is a comma-separated list of terms; a term is `*`, a number, or a range `a-b`,
optionally followed by a step `/n` (`*/6`, `0-30/10`, `5/15` = from 5 to the field's maximum).
Ranges are checked per field (minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of
week 0-7 with 0 and 7 both Sunday). Names (`jan`, `mon`) and `@daily` shorthands are not
accepted: write numbers.

Day matching follows classic (Vixie) cron: when both day-of-month and day-of-week are
restricted (neither starts with `*`), a day matches if *either* matches; otherwise the
restricted one decides. `next_after` works on wall-clock time at minute resolution and keeps
the datetime's tzinfo.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

FIELDS = (  # name, lowest, highest
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_SEARCH_YEARS = 9  # covers the leap cycle across a skipped century leap year (2096 -> 2104)


class CronError(ValueError):
    """The expression is malformed; the message names the field and the problem."""


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday (7 folded into 0)
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, t: datetime) -> bool:
        return t.minute in self.minutes and t.hour in self.hours and t.month in self.months and self._day_ok(t)

    def _day_ok(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after `after` (seconds are dropped)."""
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_ok(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            else:
                later = [m for m in self.minutes if m >= t.minute]
                if later:
                    return t.replace(minute=min(later))
                t = t.replace(minute=0) + timedelta(hours=1)
        raise CronError(f"{self.text!r} matches no time within {_SEARCH_YEARS} years of {after.isoformat()}")


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    def num(s: str) -> int:
        if not s.isdigit():
            raise CronError(f"{name}: {s!r} is not a number (expected {lo}-{hi})")
        v = int(s)
        if not lo <= v <= hi:
            raise CronError(f"{name}: {v} is out of range {lo}-{hi}")
        return v

    values: set[int] = set()
    for term in text.split(","):
        if not term:
            raise CronError(f"{name}: empty list element in {text!r}")
        rng, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} in {term!r} must be a whole number >= 1")
            step = int(step_text)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            first, _, last = rng.partition("-")
            a, b = num(first), num(last)
            if a > b:
                raise CronError(f"{name}: range {rng!r} runs backwards")
        else:
            a = num(rng)
            b = hi if slash else a
        values.update(range(a, b + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Every:
    """`@every 30s` / `@every 6h`: a fixed interval (seconds), for short test schedules and for
    operators who mean "every so often" rather than a wall-clock time."""

    text: str
    seconds: float

    def next_after(self, after: datetime) -> datetime:
        return after + timedelta(seconds=self.seconds)


_EVERY = re.compile(r"@every\s+(\d+(?:\.\d+)?)\s*(s|m|h)")


def parse_cron(text: str) -> Cron | Every:
    if not isinstance(text, str):
        raise CronError(f"expected a string, got {type(text).__name__}")
    if text.strip().startswith("@every"):
        m = _EVERY.fullmatch(text.strip())
        if not m or float(m[1]) <= 0:
            raise CronError(f"expected '@every N' with N > 0 and a unit s, m or h, got {text!r}")
        return Every(text, float(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]])
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, FIELDS)]
    minutes, hours, days, months, weekdays = sets
    weekdays = frozenset(d % 7 for d in weekdays)
    days_restricted, weekdays_restricted = not parts[2].startswith("*"), not parts[4].startswith("*")
    if not (days_restricted and weekdays_restricted) and not any(d <= _longest_month(m) for m in months for d in days):
        raise CronError(f"day-of-month {parts[2]!r} never occurs in month {parts[3]!r}")
    return Cron(text, minutes, hours, days, months, weekdays, days_restricted, weekdays_restricted)


def _longest_month(month: int) -> int:
    return calendar.monthrange(2000, month)[1]  # 2000 is a leap year: February has 29 days


def next_after(expr: str | Cron | Every, after: datetime) -> datetime:
    """The first time strictly after `after` at which `expr` fires."""
    return (parse_cron(expr) if isinstance(expr, str) else expr).next_after(after)

"""When a policy fires: CBR's RRULE subset, parsed and checked, and its fire times in the policy's time zone.

The subset (CBR trigger.properties.pattern): `KEY=VALUE` parts joined by `;`, keys
  FREQ      DAILY | WEEKLY (required)
  INTERVAL  1..30, every Nth day (DAILY) or week (WEEKLY); default 1
  BYDAY     MO,TU,WE,TH,FR,SA,SU; with DAILY it filters the days; WEEKLY without it fires on the start's weekday
  BYHOUR    0..23, one or more (required)
  BYMINUTE  0..59, one or more (required)
Keys and values are case-insensitive (as RFC 5545 has it); a key or a value given twice, an empty part and any
other key (COUNT, UNTIL, BYSECOND, BYMONTH, ...) are refused with InvalidPatternError. A policy has 1..24
patterns; together their fire times must be at least an hour apart, which also keeps them to 24 a day (one
hour apart leaves room for no more), else ScheduleTooDenseError.

Times are wall-clock times in the policy's zone, the way rrule reads them (dateutil generates them):
- INTERVAL counts from the local date of the start (the policy's trigger start_time, which the service sets to
  the creation time when the caller gives none): FREQ=DAILY;INTERVAL=3 fires on the start's date, three days
  later, and so on; WEEKLY counts weeks from the Monday-to-Sunday week holding the start. Nothing fires before
  the start. Without a start, INTERVAL counts from 1970-01-05 (a Monday) and nothing is cut.
- A wall time the zone skips (02:30 on a spring-forward day in Europe/Berlin) fires at the instant it names
  with the offset in force before the change, i.e. moved forward by the gap (03:30 CEST, 01:30 UTC), as
  PEP 495 and java.time resolve it; it is not dropped, so a daily backup still runs that day. If that lands on
  another fire time of the day, the two are one fire. The one-hour spacing is checked on wall times, so on that
  one day a moved time can come less than an hour before the next (02:00 moved to 03:00 CEST, then 03:30).
- A wall time the zone repeats (02:30 on a fall-back day) fires once, at its first occurrence (fold=0).

`Schedule.fire_times` and `Schedule.next_fire` answer in aware UTC datetimes. They are fast enough to ask for
every vault at once: the rrule objects are cached, each anchored at a date near the question (an rrule walks
from its dtstart, so one anchored at a policy's start would walk from the policy's whole past), and
`parse_schedule` returns the same Schedule object for the same arguments.
"""
from __future__ import annotations

import bisect
import datetime as dt
import functools
import heapq
import math
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from dateutil import rrule

from cbr_common.echo import short
from cbr_policy.domain import errors
from cbr_policy.domain.timezones import parse_timezone

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
FREQUENCIES = {"DAILY": rrule.DAILY, "WEEKLY": rrule.WEEKLY}
KEYS = ("FREQ", "INTERVAL", "BYDAY", "BYHOUR", "BYMINUTE")
MAX_PATTERNS = 24
MAX_INTERVAL = 30
MAX_PATTERN_LENGTH = 512
MIN_GAP_MINUTES = 60
MINUTES_PER_DAY = 24 * 60
# Day numbers count from this Monday, so a day number modulo 7 is its weekday (0 = Monday).
DAY_ZERO = dt.date(1970, 1, 5)
# No zone's UTC offset ever reached this (local mean times included), so a wall time and its UTC instant are
# never further apart: the bound for reading wall times into UTC in order.
MAX_OFFSET = dt.timedelta(hours=16)
UTC = dt.timezone.utc
NUMBER = re.compile(r"\d{1,2}")


@dataclass(frozen=True)
class Pattern:
    """One parsed pattern; `weekdays` (0 = Monday) is empty when BYDAY was not given."""
    text: str
    freq: str
    interval: int
    weekdays: tuple[int, ...]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]

    @property
    def times(self) -> tuple[int, ...]:
        """Its times of day, in minutes after midnight, ascending."""
        return tuple(sorted(h * 60 + m for h in self.hours for m in self.minutes))


def parse_pattern(text: str, position: int = 1) -> Pattern:
    """One pattern of CBR's RRULE subset; raises InvalidPatternError naming what is wrong."""
    where = f"pattern {position}"
    if not isinstance(text, str) or not text:
        raise errors.InvalidPatternError(f"{where} is empty")
    if len(text) > MAX_PATTERN_LENGTH:
        raise errors.InvalidPatternError(f"{where} is longer than {MAX_PATTERN_LENGTH} characters")
    where = f"pattern {position} ({short(text)})"
    parts: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        key = key.upper()
        if not sep or not key:
            raise errors.InvalidPatternError(f"{where}: expected KEY=VALUE parts joined by ';', got {short(part)}")
        if key not in KEYS:
            raise errors.InvalidPatternError(f"{where}: {key} is not allowed; CBR patterns take only "
                                             f"{', '.join(KEYS)}")
        if key in parts:
            raise errors.InvalidPatternError(f"{where}: {key} is given twice")
        if not value:
            raise errors.InvalidPatternError(f"{where}: {key} has no value")
        parts[key] = value.upper()
    for key in ("FREQ", "BYHOUR", "BYMINUTE"):
        if key not in parts:
            raise errors.InvalidPatternError(f"{where}: {key} is required")
    freq = parts["FREQ"]
    if freq not in FREQUENCIES:
        raise errors.InvalidPatternError(f"{where}: FREQ must be DAILY or WEEKLY, got {short(freq)}")
    interval = 1
    if "INTERVAL" in parts:
        interval = _numbers(parts["INTERVAL"], "INTERVAL", 1, MAX_INTERVAL, where)
        if len(interval) != 1:
            raise errors.InvalidPatternError(f"{where}: INTERVAL takes one number")
        interval = interval[0]
    weekdays: tuple[int, ...] = ()
    if "BYDAY" in parts:
        names = parts["BYDAY"].split(",")
        for name in names:
            if name not in WEEKDAYS:
                raise errors.InvalidPatternError(f"{where}: BYDAY takes MO, TU, WE, TH, FR, SA, SU; got {short(name)}")
        if len(set(names)) != len(names):
            raise errors.InvalidPatternError(f"{where}: BYDAY repeats a day")
        weekdays = tuple(sorted(WEEKDAYS.index(n) for n in names))
    hours = _numbers(parts["BYHOUR"], "BYHOUR", 0, 23, where)
    minutes = _numbers(parts["BYMINUTE"], "BYMINUTE", 0, 59, where)
    return Pattern(text=text, freq=freq, interval=interval, weekdays=weekdays, hours=hours, minutes=minutes)


def _numbers(value: str, key: str, low: int, high: int, where: str) -> tuple[int, ...]:
    items = value.split(",")
    numbers = []
    for item in items:
        if not NUMBER.fullmatch(item) or not low <= int(item) <= high:
            raise errors.InvalidPatternError(f"{where}: {key} takes numbers {low}..{high}, got {short(item)}")
        numbers.append(int(item))
    if len(set(numbers)) != len(numbers):
        raise errors.InvalidPatternError(f"{where}: {key} repeats a number")
    return tuple(sorted(numbers))


@dataclass(frozen=True)
class _Plan:
    """A pattern bound to a schedule's anchor: which days it fires on, as residues of the day number."""
    pattern: Pattern
    weekdays: tuple[int, ...]  # BYDAY, or the anchor's weekday for WEEKLY without BYDAY; empty: every day
    step_days: int             # rrule's period: dtstart may move by multiples of it without changing anything
    period: int                # days after which its set of firing days repeats
    residues: frozenset[int]   # day numbers (since DAY_ZERO) modulo period it fires on
    times: tuple[int, ...]


def _plan(pattern: Pattern, anchor: dt.date) -> _Plan:
    start_day = (anchor - DAY_ZERO).days
    if pattern.freq == "DAILY":
        weekdays = pattern.weekdays
        step = pattern.interval
        period = math.lcm(step, 7) if weekdays else step
        residues = frozenset(r for r in range(period)
                             if (r - start_day) % step == 0 and (not weekdays or r % 7 in weekdays))
    else:
        weekdays = pattern.weekdays or (anchor.weekday(),)
        step = period = 7 * pattern.interval
        residues = frozenset(r for r in range(period)
                             if (r // 7 - start_day // 7) % pattern.interval == 0 and r % 7 in weekdays)
    return _Plan(pattern, weekdays, step, period, residues, pattern.times)


@functools.lru_cache(maxsize=8192)
def _rule(pattern: Pattern, weekdays: tuple[int, ...], anchor: dt.date) -> rrule.rrule:
    return rrule.rrule(FREQUENCIES[pattern.freq], dtstart=dt.datetime.combine(anchor, dt.time()),
                       interval=pattern.interval, byweekday=weekdays or None, byhour=pattern.hours,
                       byminute=pattern.minutes, bysecond=0, cache=False)


def _generators(plans: Sequence[_Plan]) -> tuple[_Plan, ...]:
    """Fewer plans that fire at the same times: plans alike but for their hours become one with all the hours
    (BYHOUR x BYMINUTE is a product, so only equal minutes can share one), e.g. 24 one-hour patterns, one rrule."""
    groups: dict[tuple, list[_Plan]] = {}
    for plan in plans:
        key = (plan.pattern.freq, plan.pattern.interval, plan.weekdays, plan.pattern.minutes)
        groups.setdefault(key, []).append(plan)
    merged = []
    for (freq, interval, weekdays, minutes), group in groups.items():
        hours = tuple(sorted({h for plan in group for h in plan.pattern.hours}))
        pattern = Pattern(text=";".join(p.pattern.text for p in group), freq=freq, interval=interval,
                          weekdays=weekdays, hours=hours, minutes=minutes)
        merged.append(_Plan(pattern, weekdays, group[0].step_days, group[0].period, group[0].residues,
                            pattern.times))
    return tuple(merged)


class Schedule:
    """A policy's patterns in its zone, from its start. Build it with `parse_schedule`."""

    def __init__(self, patterns: Sequence[Pattern], timezone: str, zone: dt.tzinfo, start: dt.datetime | None):
        self.patterns = tuple(patterns)
        self.timezone = timezone
        self.zone = zone
        self.start = start
        self.anchor = start.astimezone(zone).date() if start is not None else DAY_ZERO
        self._plans = tuple(_plan(p, self.anchor) for p in self.patterns)
        self._generators = _generators(self._plans)
        self._fixed = isinstance(zone, dt.timezone)
        # Every pattern fires at least once per its period, so the next fire time is never further off.
        self._horizon = dt.timedelta(days=max(p.period for p in self._plans) + 2)
        self._last: tuple[dt.datetime, dt.datetime | None] | None = None

    def __repr__(self) -> str:
        return f"Schedule({[p.text for p in self.patterns]!r}, {self.timezone!r}, start={self.start!r})"

    def fire_times(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """Fire times t with after < t <= until and t >= start, as aware UTC datetimes: every pattern's, merged,
        in order, each instant once."""
        after, until = after.astimezone(UTC), until.astimezone(UTC)
        if self.start is not None and self.start > after:
            after = self.start - dt.timedelta(microseconds=1)  # times are whole minutes: t >= start
        if until <= after:
            return
        wall_from = self._earliest_wall(after)
        walls = heapq.merge(*(self._walls(plan, wall_from) for plan in self._generators))
        wall_to = self._latest_wall(until)
        pending: list[dt.datetime] = []  # instants read, not yet known to be the smallest left
        last = after
        for wall in walls:
            if wall > wall_to:
                break
            heapq.heappush(pending, self._instant(wall))
            # Wall times still to come are at or after `wall`: none has an instant below this.
            floor = self._lowest_instant(wall)
            while pending and pending[0] <= floor:
                instant = heapq.heappop(pending)
                if instant > until:
                    return
                if instant > last:
                    last = instant
                    yield instant
        for instant in sorted(pending):
            if instant > until:
                return
            if instant > last:
                last = instant
                yield instant

    def next_fire(self, after: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after `after` (and not before the start)."""
        last = self._last
        if last is not None and last[0] == after:
            return last[1]  # the scheduler asks this for every vault of a policy with the same `after`
        try:
            until = after + self._horizon
        except OverflowError:
            until = dt.datetime.max.replace(tzinfo=UTC)
        if self.start is not None and self.start > after:
            until = max(until, self.start + self._horizon)
        try:
            found = next(self.fire_times(after, until), None)
        except OverflowError:  # at the end of the calendar
            found = None
        self._last = (after, found)
        return found

    def _walls(self, plan: _Plan, wall_from: dt.datetime) -> Iterable[dt.datetime]:
        """The plan's wall times from wall_from on, from an rrule anchored at most one period before it."""
        skipped = (wall_from.date() - self.anchor).days // plan.step_days
        anchor = self.anchor + dt.timedelta(days=max(0, skipped) * plan.step_days)
        return _rule(plan.pattern, plan.weekdays, anchor).xafter(wall_from, inc=True)

    # Wall time <-> instant. A fixed offset maps both ways exactly and in order. A zone with DST does not keep
    # order around a gap (02:30 moved to 03:30 CEST comes after 03:00 CEST) and may have historic jumps of a day,
    # so for it the bounds are loose by MAX_OFFSET and instants are put in order through a heap.

    def _earliest_wall(self, instant: dt.datetime) -> dt.datetime:
        """No wall time before this has an instant after `instant`."""
        if self._fixed:
            return (instant + self.zone.utcoffset(None)).replace(tzinfo=None)
        return instant.replace(tzinfo=None) - MAX_OFFSET

    def _latest_wall(self, instant: dt.datetime) -> dt.datetime:
        """No wall time after this has an instant at or before `instant`."""
        if self._fixed:
            return (instant + self.zone.utcoffset(None)).replace(tzinfo=None)
        return instant.replace(tzinfo=None) + MAX_OFFSET

    def _lowest_instant(self, wall: dt.datetime) -> dt.datetime:
        """No wall time at or after `wall` has an instant before this."""
        if self._fixed:
            return self._instant(wall)
        return wall.replace(tzinfo=UTC) - MAX_OFFSET

    def _instant(self, wall: dt.datetime) -> dt.datetime:
        """The UTC instant of a naive wall time: fold=0, so a repeated time is its first occurrence and a
        skipped one moves forward by the gap."""
        if self._fixed:
            return (wall - self.zone.utcoffset(None)).replace(tzinfo=UTC)
        return wall.replace(tzinfo=self.zone).astimezone(UTC)


def parse_schedule(patterns: Sequence[str], timezone: str, start: dt.datetime | None) -> Schedule:
    """Checks the patterns (InvalidPatternError, ScheduleTooDenseError) and the zone (InvalidTimezoneError; empty
    means UTC) and returns their Schedule; `start` is aware, or None for no start."""
    if start is not None and start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    try:
        key = tuple(patterns)
        hash(key)
    except TypeError:
        raise errors.InvalidPatternError("patterns must be strings") from None
    return _parse_schedule(key, timezone or "UTC", start.astimezone(UTC) if start is not None else None)


@functools.lru_cache(maxsize=4096)
def _parse_schedule(patterns: tuple[str, ...], timezone: str, start: dt.datetime | None) -> Schedule:
    if not patterns:
        raise errors.InvalidPatternError("give at least one trigger pattern")
    if len(patterns) > MAX_PATTERNS:
        raise errors.ScheduleTooDenseError(f"at most {MAX_PATTERNS} trigger patterns, got {len(patterns)}")
    parsed = [parse_pattern(text, i) for i, text in enumerate(patterns, 1)]
    zone = parse_timezone(timezone)
    schedule = Schedule(parsed, timezone, zone, start)
    check_density(schedule._plans)
    return schedule


def check_density(plans: Sequence[_Plan]) -> None:
    """Fire times of all patterns together at least an hour apart, over all time. Each pattern's firing days
    repeat with its period, so two patterns fire on the same day (or on adjacent days) exactly when their day
    residues agree modulo the gcd of their periods; no need to walk the lcm of all periods, which can be
    centuries. Raises InvalidPatternError for a pattern that never fires."""
    for i, plan in enumerate(plans, 1):
        if not plan.residues:
            raise errors.InvalidPatternError(
                f"pattern {i} ({plan.pattern.text!r}) never fires: INTERVAL={plan.pattern.interval} counted from "
                f"the start's date never lands on its BYDAY days")
    # Each pattern alone first, so that below each has at most 24 times of day, an hour apart.
    for i, plan in enumerate(plans, 1):
        for earlier, later in zip(plan.times, plan.times[1:]):
            if later - earlier < MIN_GAP_MINUTES:
                raise _too_dense(earlier, i, later, i, next_day=False)
        _check_next_day(plan, i, plan, i)
    for i, a in enumerate(plans, 1):
        for j, b in enumerate(plans, 1):
            if i < j and _can_meet(a, b, 0):
                for x in a.times:
                    y = _nearest(b.times, x)
                    if 0 < abs(x - y) < MIN_GAP_MINUTES:
                        raise _too_dense(x, i, y, j, next_day=False)
            if i != j:
                _check_next_day(a, i, b, j)


def _check_next_day(a: _Plan, i: int, b: _Plan, j: int) -> None:
    """When b fires the day after a fires: a's last time of day against b's first."""
    if _can_meet(a, b, 1) and b.times[0] + MINUTES_PER_DAY - a.times[-1] < MIN_GAP_MINUTES:
        raise _too_dense(a.times[-1], i, b.times[0], j, next_day=True)


def _can_meet(a: _Plan, b: _Plan, days_later: int) -> bool:
    """Is there a day d on which a fires, with b firing on d + days_later?"""
    g = math.gcd(a.period, b.period)
    return not {r % g for r in a.residues}.isdisjoint({(r - days_later) % g for r in b.residues})


def _nearest(times: tuple[int, ...], x: int) -> int:
    at = bisect.bisect_left(times, x)
    return min(times[max(at - 1, 0):at + 1], key=lambda y: abs(y - x))


def _too_dense(a_time: int, a_index: int, b_time: int, b_index: int, next_day: bool) -> errors.ScheduleTooDenseError:
    def hhmm(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"
    first = f"{hhmm(a_time)} (pattern {a_index})"
    second = f"{hhmm(b_time)}{' the next day' if next_day else ''} (pattern {b_index})"
    return errors.ScheduleTooDenseError(f"fire times must be at least an hour apart: {first} and {second} are not")

"""CBR's RRULE subset: which patterns parse, which schedules are too dense, and the fire times they give."""
from __future__ import annotations

import datetime as dt
import math
import random
import time
import zoneinfo

import pytest
from dateutil import rrule

from cbr_policy.domain import errors
from cbr_policy.domain.schedule import FREQUENCIES, parse_pattern, parse_schedule

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
START = dt.datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def fires(patterns, after, until, timezone="UTC", start=START) -> list[dt.datetime]:
    return list(parse_schedule(patterns, timezone, start).fire_times(after, until))


# Parsing


@pytest.mark.parametrize("pattern", [
    "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00",
    "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00",
    "FREQ=DAILY;INTERVAL=1;BYHOUR=6,18;BYMINUTE=00",
    "FREQ=DAILY;INTERVAL=30;BYHOUR=23;BYMINUTE=59",
    "FREQ=DAILY;BYDAY=SA,SU;BYHOUR=0;BYMINUTE=0",           # BYDAY filters the days of a daily pattern
    "FREQ=WEEKLY;INTERVAL=2;BYHOUR=3;BYMINUTE=15",          # weekly without BYDAY: the start's weekday
    "BYMINUTE=0;BYHOUR=1;FREQ=DAILY",                       # any order
    "freq=daily;byhour=6;byminute=0",                       # case-insensitive, as RFC 5545
    "FREQ=DAILY;BYHOUR=" + ",".join(str(h) for h in range(24)) + ";BYMINUTE=0",
])
def test_valid_patterns(pattern):
    assert parse_schedule([pattern], "", START).patterns[0].text == pattern


@pytest.mark.parametrize("patterns, error, says", [
    ([], errors.InvalidPatternError, "at least one"),
    ([""], errors.InvalidPatternError, "empty"),
    (["FREQ=HOURLY;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "DAILY or WEEKLY"),
    (["FREQ=MONTHLY;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "DAILY or WEEKLY"),
    (["BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "FREQ is required"),
    (["FREQ=DAILY;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR is required"),
    (["FREQ=DAILY;BYHOUR=1"], errors.InvalidPatternError, "BYMINUTE is required"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;COUNT=3"], errors.InvalidPatternError, "COUNT is not allowed"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;UNTIL=20250101T000000Z"], errors.InvalidPatternError, "UNTIL is not allowed"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;BYSECOND=0"], errors.InvalidPatternError, "BYSECOND is not allowed"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;BYMONTH=1"], errors.InvalidPatternError, "BYMONTH is not allowed"),
    (["RRULE:FREQ=DAILY;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "not allowed"),
    (["FREQ=DAILY;FREQ=DAILY;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "FREQ is given twice"),
    (["FREQ=DAILY;BYHOUR=;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR has no value"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0;"], errors.InvalidPatternError, "KEY=VALUE"),
    (["FREQ=DAILY; BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "not allowed"),
    (["FREQ=DAILY;BYHOUR=24;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR takes numbers 0..23"),
    (["FREQ=DAILY;BYHOUR=-1;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR takes numbers 0..23"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=60"], errors.InvalidPatternError, "BYMINUTE takes numbers 0..59"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=000"], errors.InvalidPatternError, "BYMINUTE takes numbers"),
    (["FREQ=DAILY;BYHOUR=1,,2;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR takes numbers"),
    (["FREQ=DAILY;BYHOUR=1,1;BYMINUTE=0"], errors.InvalidPatternError, "BYHOUR repeats"),
    (["FREQ=DAILY;INTERVAL=0;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "INTERVAL takes numbers 1..30"),
    (["FREQ=DAILY;INTERVAL=31;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "INTERVAL takes numbers 1..30"),
    (["FREQ=DAILY;INTERVAL=1,2;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "INTERVAL takes one"),
    (["FREQ=WEEKLY;BYDAY=MON;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "BYDAY takes"),
    (["FREQ=WEEKLY;BYDAY=1MO;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "BYDAY takes"),
    (["FREQ=WEEKLY;BYDAY=MO,MO;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "BYDAY repeats"),
    # Every 7th day from a Monday is always a Monday: a Tuesday-only filter never fires.
    (["FREQ=DAILY;INTERVAL=7;BYDAY=TU;BYHOUR=1;BYMINUTE=0"], errors.InvalidPatternError, "never fires"),
    (["FREQ=DAILY;BYHOUR=1;BYMINUTE=0", "FREQ=DAILY;BYHOUR=1;BYMINUTE=0,61"], errors.InvalidPatternError,
     "pattern 2"),
    ([f"FREQ=WEEKLY;BYDAY=MO;BYHOUR={h};BYMINUTE=0" for h in range(24)] + ["FREQ=WEEKLY;BYDAY=TU;BYHOUR=0;BYMINUTE=0"],
     errors.ScheduleTooDenseError, "at most 24"),
    ([None], errors.InvalidPatternError, "empty"),
    ([["FREQ=DAILY"]], errors.InvalidPatternError, "strings"),
])
def test_invalid_patterns(patterns, error, says):
    with pytest.raises(error) as raised:
        parse_schedule(patterns, "", START)
    assert says in str(raised.value)


@pytest.mark.parametrize("timezone", ["UTC+25:00", "Mars/Olympus", "+08:00", "UTC+8"])
def test_invalid_time_zone(timezone):
    with pytest.raises(errors.InvalidTimezoneError):
        parse_schedule(["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"], timezone, START)


def test_pattern_fields():
    p = parse_pattern("FREQ=WEEKLY;INTERVAL=2;BYDAY=FR,MO;BYHOUR=18,6;BYMINUTE=30")
    assert (p.freq, p.interval, p.weekdays, p.hours, p.minutes) == ("WEEKLY", 2, (0, 4), (6, 18), (30,))
    assert p.times == (6 * 60 + 30, 18 * 60 + 30)


# Density: at least an hour apart, which also keeps them to 24 a day


@pytest.mark.parametrize("patterns, close", [
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"], "06:00 (pattern 1) and 06:30 (pattern 1)"),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "FREQ=DAILY;BYHOUR=6;BYMINUTE=59"], "06:00 (pattern 1) and 06:59 (pattern 2)"),
    (["FREQ=DAILY;BYHOUR=6;BYMINUTE=40", "FREQ=DAILY;BYHOUR=7;BYMINUTE=0"], "06:40 (pattern 1) and 07:00 (pattern 2)"),
    # Across midnight, on consecutive days.
    (["FREQ=DAILY;BYHOUR=12,23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=0;BYMINUTE=15"],
     "23:30 (pattern 1) and 00:15 the next day (pattern 2)"),
    (["FREQ=DAILY;BYHOUR=0,12;BYMINUTE=10", "FREQ=DAILY;BYHOUR=23;BYMINUTE=30"],
     "23:30 (pattern 2) and 00:10 the next day (pattern 1)"),
    # A weekly pattern meets a daily one on its days only, but it does meet it.
    (["FREQ=DAILY;INTERVAL=3;BYHOUR=6;BYMINUTE=0", "FREQ=WEEKLY;BYDAY=TH;BYHOUR=6;BYMINUTE=30"], "06:00"),
    # Sunday night against Monday morning.
    (["FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=45", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0;BYMINUTE=15"], "the next day"),
    # Every second day at 23:30 and every third day at 00:15: they meet on adjacent days (lcm 6).
    (["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;INTERVAL=3;BYHOUR=0;BYMINUTE=15"], "the next day"),
])
def test_too_dense(patterns, close):
    with pytest.raises(errors.ScheduleTooDenseError) as raised:
        parse_schedule(patterns, "Europe/Berlin", START)
    assert close in str(raised.value)


@pytest.mark.parametrize("patterns", [
    ["FREQ=DAILY;BYHOUR=" + ",".join(str(h) for h in range(24)) + ";BYMINUTE=0"],   # 24 a day, an hour apart
    [f"FREQ=DAILY;BYHOUR={h};BYMINUTE=0" for h in range(24)],                       # the same as 24 patterns
    ["FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "FREQ=DAILY;BYHOUR=6;BYMINUTE=0"],            # the same time is one fire
    ["FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=6;BYMINUTE=0"],
    ["FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "FREQ=DAILY;BYHOUR=7;BYMINUTE=0"],            # exactly an hour
    ["FREQ=DAILY;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=0;BYMINUTE=30"],         # an hour across midnight
    # Never on adjacent days: Monday 23:30 and Wednesday 00:10 are more than a day apart.
    ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=23;BYMINUTE=30", "FREQ=WEEKLY;BYDAY=WE;BYHOUR=0;BYMINUTE=10"],
    # Both every second day from the same start: the same days, so 23:00 is never followed by 00:30 next day.
    ["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=0", "FREQ=DAILY;INTERVAL=2;BYHOUR=0;BYMINUTE=30"],
    # Monday 23:45 (every second week) and Wednesday 00:30 are never on adjacent days.
    ["FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=23;BYMINUTE=45", "FREQ=DAILY;BYDAY=WE;BYHOUR=0;BYMINUTE=30"],
])
def test_dense_enough(patterns):
    parse_schedule(patterns, "Europe/Berlin", START)


def test_density_depends_on_the_phase_of_intervals():
    # Every 4th day at 00:10 and every 4th day at 23:30: adjacent only if the days are one apart, which they
    # never are (same start, same interval: the same days).
    parse_schedule(["FREQ=DAILY;INTERVAL=4;BYHOUR=0;BYMINUTE=10", "FREQ=DAILY;INTERVAL=4;BYHOUR=23;BYMINUTE=30"],
                   "", START)
    # Every 2nd and every 3rd day meet on adjacent days somewhere in their 6-day cycle.
    with pytest.raises(errors.ScheduleTooDenseError):
        parse_schedule(["FREQ=DAILY;INTERVAL=2;BYHOUR=0;BYMINUTE=10",
                        "FREQ=DAILY;INTERVAL=3;BYHOUR=23;BYMINUTE=30"], "", START)


def test_density_matches_a_brute_force_walk():
    """The residue arithmetic agrees with walking the wall times over a whole common period."""
    rng = random.Random(20240601)
    checked = {True: 0, False: 0}
    for _ in range(300):
        patterns = []
        for _ in range(rng.randint(1, 4)):
            freq = rng.choice(["DAILY", "WEEKLY"])
            parts = [f"FREQ={freq}", f"INTERVAL={rng.choice([1, 2, 3, 4, 6])}"]
            if rng.random() < 0.6:
                parts.append("BYDAY=" + ",".join(rng.sample(["MO", "TU", "WE", "TH", "FR", "SA", "SU"],
                                                            rng.randint(1, 3))))
            parts.append("BYHOUR=" + ",".join(str(h) for h in sorted(rng.sample(range(24), rng.randint(1, 2)))))
            parts.append(f"BYMINUTE={rng.choice([0, 10, 30, 45, 59])}")
            patterns.append(";".join(parts))
        start = START + dt.timedelta(days=rng.randint(0, 13), hours=rng.randint(0, 23))
        expected = _brute_force_ok(patterns, start)
        try:
            parse_schedule(patterns, "", start)
            ok = True
        except errors.ScheduleTooDenseError:
            ok = False
        except errors.InvalidPatternError as exc:
            assert "never fires" in str(exc)
            continue
        assert ok == expected, patterns
        checked[ok] += 1
    assert checked[True] > 20 and checked[False] > 20, checked


def _brute_force_ok(patterns: list[str], start: dt.datetime) -> bool:
    """Wall times of every pattern from the start's date over the lcm of their periods (and a week more)."""
    anchor = dt.datetime.combine(start.date(), dt.time())
    periods = []
    walls = set()
    rules = []
    for text in patterns:
        p = parse_pattern(text)
        periods.append(p.interval * (7 if p.freq == "WEEKLY" else 1) * 7)
        weekdays = p.weekdays or ((anchor.weekday(),) if p.freq == "WEEKLY" else None)
        rules.append(rrule.rrule(FREQUENCIES[p.freq], dtstart=anchor, interval=p.interval, byweekday=weekdays,
                                 byhour=p.hours, byminute=p.minutes, bysecond=0))
    end = anchor + dt.timedelta(days=math.lcm(*periods) + 14)
    for rule in rules:
        walls.update(rule.between(anchor, end, inc=True))
    ordered = sorted(walls)
    return all(b - a >= dt.timedelta(hours=1) for a, b in zip(ordered, ordered[1:]))


# Fire times


def test_daily_in_utc():
    got = fires(["FREQ=DAILY;INTERVAL=1;BYHOUR=6,18;BYMINUTE=00"], utc(2024, 3, 1), utc(2024, 3, 3))
    assert got == [utc(2024, 3, 1, 6), utc(2024, 3, 1, 18), utc(2024, 3, 2, 6), utc(2024, 3, 2, 18)]


def test_bounds_are_after_exclusive_until_inclusive():
    pattern = ["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"]
    assert fires(pattern, utc(2024, 3, 1, 6), utc(2024, 3, 2, 6)) == [utc(2024, 3, 2, 6)]
    assert fires(pattern, utc(2024, 3, 1, 5, 59, 59), utc(2024, 3, 1, 6)) == [utc(2024, 3, 1, 6)]
    assert fires(pattern, utc(2024, 3, 1, 7), utc(2024, 3, 1, 7)) == []
    assert fires(pattern, utc(2024, 3, 2), utc(2024, 3, 1)) == []


@pytest.mark.parametrize("start, first", [
    # CBR: the first run is on the start's day if its time has not passed, else the next cycle.
    (utc(2024, 1, 1, 10), utc(2024, 1, 4, 6)),
    (utc(2024, 1, 1, 5, 59), utc(2024, 1, 1, 6)),
    (utc(2024, 1, 1, 6), utc(2024, 1, 1, 6)),        # a fire at the start itself counts
    (utc(2024, 1, 2, 0, 0), utc(2024, 1, 2, 6)),     # the cycle counts from the start's date
])
def test_interval_counts_from_the_start(start, first):
    got = fires(["FREQ=DAILY;INTERVAL=3;BYHOUR=6;BYMINUTE=0"], utc(2023, 12, 1), utc(2024, 1, 12), start=start)
    assert got[0] == first
    assert all(b - a == dt.timedelta(days=3) for a, b in zip(got, got[1:]))


def test_weekly():
    got = fires(["FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=14;BYMINUTE=00"], utc(2024, 1, 1), utc(2024, 1, 16))
    assert got == [utc(2024, 1, 1, 14), utc(2024, 1, 2, 14), utc(2024, 1, 8, 14), utc(2024, 1, 9, 14),
                   utc(2024, 1, 15, 14)]


def test_weekly_interval_counts_weeks_from_the_start_week():
    # Started on Wednesday 2024-01-03: Friday of that week, then every second week's Monday and Friday.
    got = fires(["FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;BYHOUR=8;BYMINUTE=0"], utc(2024, 1, 1), utc(2024, 2, 1),
                start=utc(2024, 1, 3, 12))
    assert got == [utc(2024, 1, 5, 8), utc(2024, 1, 15, 8), utc(2024, 1, 19, 8), utc(2024, 1, 29, 8)]


def test_weekly_without_byday_fires_on_the_starts_weekday():
    got = fires(["FREQ=WEEKLY;BYHOUR=3;BYMINUTE=0"], utc(2024, 1, 1), utc(2024, 1, 25), start=utc(2024, 1, 4))
    assert got == [utc(2024, 1, 4, 3), utc(2024, 1, 11, 3), utc(2024, 1, 18, 3)]


def test_daily_with_byday():
    got = fires(["FREQ=DAILY;BYDAY=SA,SU;BYHOUR=9;BYMINUTE=0"], utc(2024, 1, 1), utc(2024, 1, 15))
    assert got == [utc(2024, 1, 6, 9), utc(2024, 1, 7, 9), utc(2024, 1, 13, 9), utc(2024, 1, 14, 9)]


def test_patterns_merge_in_order_each_instant_once():
    patterns = ["FREQ=WEEKLY;BYDAY=SA;BYHOUR=12;BYMINUTE=0",
                "FREQ=DAILY;BYHOUR=6;BYMINUTE=0",
                "FREQ=WEEKLY;BYDAY=MO;BYHOUR=6;BYMINUTE=0"]  # the daily 06:00 already covers it
    got = fires(patterns, utc(2024, 1, 5), utc(2024, 1, 8, 23))
    assert got == [utc(2024, 1, 5, 6), utc(2024, 1, 6, 6), utc(2024, 1, 6, 12), utc(2024, 1, 7, 6),
                   utc(2024, 1, 8, 6)]


@pytest.mark.parametrize("timezone, first", [
    ("UTC+08:00", utc(2024, 2, 29, 16)),   # midnight in UTC+08:00 is 16:00 UTC the day before
    ("UTC-03:30", utc(2024, 3, 1, 3, 30)),
    ("UTC", utc(2024, 3, 1)),
    ("", utc(2024, 3, 1)),                  # empty means UTC
    ("Asia/Shanghai", utc(2024, 2, 29, 16)),
])
def test_fixed_offsets(timezone, first):
    got = fires(["FREQ=DAILY;BYHOUR=0;BYMINUTE=0"], utc(2024, 2, 29, 12), utc(2024, 3, 2, 12), timezone)
    assert got == [first, first + dt.timedelta(days=1)]


def test_spring_forward_moves_a_skipped_time_forward():
    # 2024-03-31 in Europe/Berlin: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day: it fires at
    # 03:30 CEST (01:30 UTC), still 24 hours after the day before's 02:30 CET.
    got = fires(["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], utc(2024, 3, 29), utc(2024, 4, 2), "Europe/Berlin")
    assert got == [utc(2024, 3, 29, 1, 30), utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 30),
                   utc(2024, 4, 1, 0, 30)]
    assert [t.astimezone(BERLIN).strftime("%d %H:%M") for t in got] == ["29 02:30", "30 02:30", "31 03:30",
                                                                         "01 02:30"]


def test_spring_forward_merges_a_moved_time_with_the_one_it_lands_on():
    got = fires(["FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0"], utc(2024, 3, 30, 22), utc(2024, 3, 31, 12), "Europe/Berlin")
    # 01:00 CET, then 02:00 (moved to 03:00 CEST) and 03:00 CEST are the same instant: one fire.
    assert got == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1)]


def test_fall_back_fires_a_repeated_time_once():
    # 2024-10-27 in Europe/Berlin: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, fires at the first.
    got = fires(["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], utc(2024, 10, 25), utc(2024, 10, 29), "Europe/Berlin")
    assert got == [utc(2024, 10, 25, 0, 30), utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30),
                   utc(2024, 10, 28, 1, 30)]
    hourly = fires(["FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0"], utc(2024, 10, 26, 12), utc(2024, 10, 27, 12),
                   "Europe/Berlin")
    assert hourly == [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 2)]


def test_nothing_fires_before_the_start():
    start = utc(2024, 6, 10, 6, 0, 30)
    got = fires(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], utc(2024, 6, 1), utc(2024, 6, 13), start=start)
    assert got == [utc(2024, 6, 11, 6), utc(2024, 6, 12, 6)]
    schedule = parse_schedule(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], "", start)
    assert schedule.next_fire(utc(2020, 1, 1)) == utc(2024, 6, 11, 6)


def test_without_a_start_nothing_is_cut():
    schedule = parse_schedule(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], "", None)
    assert schedule.next_fire(utc(1999, 12, 31, 12)) == utc(2000, 1, 1, 6)


def test_next_fire():
    schedule = parse_schedule(["FREQ=WEEKLY;INTERVAL=30;BYDAY=SU;BYHOUR=23;BYMINUTE=59"], "UTC+14:00", START)
    first = schedule.next_fire(START)
    assert first == utc(2024, 1, 7, 9, 59)
    second = schedule.next_fire(first)
    assert second - first == dt.timedelta(weeks=30)
    assert schedule.next_fire(first) == second  # asked again: the same answer
    assert schedule.next_fire(second - dt.timedelta(microseconds=1)) == second


def test_parse_schedule_returns_the_same_schedule_for_the_same_arguments():
    a = parse_schedule(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], "", START)
    assert parse_schedule(("FREQ=DAILY;BYHOUR=6;BYMINUTE=0",), "UTC", START) is a


@pytest.mark.parametrize("timezone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC+05:45",
                                      "UTC-09:30", "Pacific/Apia"])
def test_fire_times_match_rrule_walked_from_the_start(timezone):
    """The anchored, cached rrules and the reordering give what one rrule per pattern walked from the policy's
    start gives, converted one by one (fold=0). Lord Howe shifts by 30 minutes; Apia skipped 2011-12-30."""
    rng = random.Random(timezone)
    zone = zoneinfo.ZoneInfo(timezone) if "/" in timezone else None
    for _ in range(15):
        patterns = []
        hours = rng.sample(range(24), 6)
        for h in hours[:rng.randint(1, 4)]:
            freq = rng.choice(["DAILY", "WEEKLY"])
            parts = [f"FREQ={freq}", f"INTERVAL={rng.randint(1, 5)}", f"BYHOUR={h}", f"BYMINUTE={rng.choice([0, 30])}"]
            if freq == "WEEKLY" or rng.random() < 0.3:
                parts.insert(1, "BYDAY=" + ",".join(rng.sample(["MO", "TU", "WE", "TH", "FR", "SA", "SU"], 3)))
            patterns.append(";".join(parts))
        start = utc(2011, 1, 1) + dt.timedelta(days=rng.randint(0, 800), minutes=rng.randint(0, 1439))
        try:
            schedule = parse_schedule(patterns, timezone, start)
        except (errors.ScheduleTooDenseError, errors.InvalidPatternError):
            continue
        after = start + dt.timedelta(days=rng.randint(-10, 400), minutes=rng.randint(0, 1439))
        until = after + dt.timedelta(days=rng.randint(1, 60))
        got = list(schedule.fire_times(after, until))
        assert got == _walked(schedule, after, until), (patterns, start, after)
        assert got == sorted(set(got))
        if got:
            assert schedule.next_fire(after) == got[0]


def _walked(schedule, after, until) -> list[dt.datetime]:
    anchor = dt.datetime.combine(schedule.start.astimezone(schedule.zone).date(), dt.time())
    found = set()
    for p in schedule.patterns:
        weekdays = p.weekdays or ((anchor.weekday(),) if p.freq == "WEEKLY" else None)
        rule = rrule.rrule(FREQUENCIES[p.freq], dtstart=anchor, interval=p.interval, byweekday=weekdays,
                           byhour=p.hours, byminute=p.minutes, bysecond=0)
        for wall in rule.between(anchor, (until + dt.timedelta(days=2)).replace(tzinfo=None), inc=True):
            instant = wall.replace(tzinfo=schedule.zone).astimezone(UTC)
            if after < instant <= until and instant >= schedule.start:
                found.add(instant)
    return sorted(found)


def test_next_fire_is_fast():
    """The scheduler asks for the next fire time of every vault: well under a millisecond each, even for a
    policy years old in a zone with DST (distinct `after`s, so no answer is reused)."""
    cases = [(["FREQ=DAILY;INTERVAL=1;BYHOUR=6,18;BYMINUTE=00"], "Europe/Berlin"),
             (["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=22;BYMINUTE=30"], "UTC+08:00"),
             ([f"FREQ=DAILY;INTERVAL={i % 5 + 1};BYHOUR={i};BYMINUTE={i}" for i in range(12)], "America/New_York")]
    for patterns, timezone in cases:
        schedule = parse_schedule(patterns, timezone, utc(2015, 3, 1))
        now = utc(2025, 6, 1)
        began = time.perf_counter()
        for i in range(500):
            assert schedule.next_fire(now + dt.timedelta(minutes=7 * i)) is not None
        per_call = (time.perf_counter() - began) / 500
        assert per_call < 0.001, (patterns, per_call)

"""The retention rule as a table: backups at local wall times, a rule and a now, in; kept ids and reasons, out."""
from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from cbr_policy.domain import errors, retention
from cbr_policy.domain.retention import BackupView, RetentionRule
from cbr_policy.domain.timezones import parse_timezone


def at(text: str, zone: dt.tzinfo) -> dt.datetime:
    """'2024-03-31 00:30' is a wall time in zone; a trailing ' fold' picks the second of a repeated hour;
    '2024-12-31T20:00Z' is UTC."""
    if text.endswith("Z"):
        return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.timezone.utc)
    fold = text.endswith(" fold")
    wall = dt.datetime.fromisoformat(text.removesuffix(" fold"))
    return wall.replace(tzinfo=zone, fold=int(fold))


def auto(backup_id: str, when: str, status: str = "available", expired: str | None = None):
    return backup_id, when, True, status, expired


def manual(backup_id: str, when: str, status: str = "available", expired: str | None = None):
    return backup_id, when, False, status, expired


@dataclass(frozen=True)
class Case:
    name: str
    zone: str
    backups: list
    rule: RetentionRule
    now: str
    kept: dict[str, tuple[str, ...]]   # every other available backup is deleted
    vault_locked: bool = False


def views(case: Case) -> list[BackupView]:
    zone = parse_timezone(case.zone)
    return [BackupView(backup_id, at(when, zone), is_auto, status, at(expired, zone) if expired else None)
            for backup_id, when, is_auto, status, expired in case.backups]


DAILY_JUNE = [auto(f"jun{day:02}", f"2024-06-{day:02} 01:00") for day in range(3, 15)]   # Mon 3rd .. Fri 14th
TWO_WEEKS = [auto(f"jun{day:02}", f"2024-06-{day:02} 01:00") for day in range(3, 17)] + [
    auto("jun16-pm", "2024-06-16 13:00")]                                                 # Mon 3rd .. Sun 16th
BERLIN_SPRING = [   # 2024-03-31 has 23 hours: 02:00 CET jumps to 03:00 CEST
    auto("sat-2330", "2024-03-30 23:30"),   # 22:30Z
    auto("sun-0000", "2024-03-31 00:00"),   # 23:00Z on the 30th: a UTC day would put it on Saturday
    auto("sun-0130", "2024-03-31 01:30"),   # 00:30Z
    auto("sun-0330", "2024-03-31 03:30"),   # 01:30Z
    auto("sun-2359", "2024-03-31 23:59"),   # 21:59Z, the last minute of the 23-hour day
    auto("mon-0000", "2024-04-01 00:00"),   # 22:00Z on the 31st
]
BERLIN_FALL = [     # 2024-10-27 has 25 hours: 03:00 CEST falls back to 02:00 CET
    auto("sat-2359", "2024-10-26 23:59"),   # 21:59Z
    auto("sun-0000", "2024-10-27 00:00"),   # 22:00Z on the 26th
    auto("sun-0230", "2024-10-27 02:30"),   # 00:30Z, first pass
    auto("sun-0230b", "2024-10-27 02:30 fold"),   # 01:30Z, second pass: newer, same wall time
    auto("sun-2359", "2024-10-27 23:59"),   # 22:59Z, the last minute of the 25-hour day
    auto("mon-0000", "2024-10-28 00:00"),   # 23:00Z on the 27th
]
NEW_YEAR_PLUS8 = [
    auto("nov30-local", "2024-11-30T15:59Z"),   # 2024-11-30 23:59 local
    auto("dec01-local", "2024-11-30T16:00Z"),   # 2024-12-01 00:00 local
    auto("dec15", "2024-12-15 12:00"),
    auto("dec31-local", "2024-12-31T15:59Z"),   # 2024-12-31 23:59 local
    auto("jan01-local", "2024-12-31T20:00Z"),   # 2025-01-01 04:00 local: January, year 2025
]
ISO_NEW_YEAR = [    # 2024-12-30 (Monday) opens ISO week 2025-W01
    auto("dec29-sun", "2024-12-29 12:00"),   # 2024-W52
    auto("dec30-mon", "2024-12-30 12:00"),   # 2025-W01
    auto("jan01-wed", "2025-01-01 12:00"),   # 2025-W01
    auto("jan05-sun", "2025-01-05 12:00"),   # 2025-W01, its newest
    auto("jan06-mon", "2025-01-06 09:00"),   # 2025-W02
]
RUNNING = [
    auto("old", "2024-06-01 00:00"),
    auto("newest", "2024-06-02 00:00"),
    auto("failed", "2024-06-03 00:00", status="error"),
    auto("going", "2024-06-03 01:00", status="deleting"),
]
LOCKED = [
    auto("newest", "2024-06-10 00:00", expired="2024-06-11 00:00"),
    auto("expired", "2024-06-09 00:00", expired="2024-06-14 00:00"),
    auto("expires-now", "2024-06-08 00:00", expired="2024-06-15 12:00"),
    auto("unexpired", "2024-06-07 00:00", expired="2024-06-15 12:00:01"),
    auto("no-expiry", "2024-06-06 00:00"),
    manual("manual", "2024-06-05 00:00"),
]
LOCKED_NOW = "2024-06-15 12:00"

CASES = [
    Case("count only", "UTC", [auto(f"a{i}", f"2024-06-0{i} 00:00") for i in range(1, 6)],
         RetentionRule(max_backups=3), "2024-06-10 00:00",
         {"a5": ("max_backups",), "a4": ("max_backups",), "a3": ("max_backups",)}),
    Case("no rule keeps everything", "UTC", [auto("a", "2020-01-01 00:00"), manual("m", "2019-01-01 00:00")],
         RetentionRule(), "2024-06-10 00:00", {"a": ("permanent",), "m": ("manual",)}),
    Case("empty input", "UTC", [], RetentionRule(max_backups=1), "2024-06-10 00:00", {}),
    Case("nothing available", "UTC", [auto("a", "2024-06-01 00:00", status="error"),
                                      auto("b", "2024-06-02 00:00", status="deleting")],
         RetentionRule(max_backups=1), "2024-06-10 00:00", {}),
    Case("ties: smaller id counts as newer", "UTC",
         [auto("b", "2024-06-01 00:00"), auto("a", "2024-06-01 00:00"), auto("c", "2024-05-01 00:00")],
         RetentionRule(max_backups=1), "2024-06-10 00:00", {"a": ("max_backups",)}),

    Case("daily across spring forward (23-hour day)", "Europe/Berlin", BERLIN_SPRING,
         RetentionRule(day_backups=3, timezone="Europe/Berlin"), "2024-04-01 12:00",
         {"mon-0000": ("day",), "sun-2359": ("day",), "sat-2330": ("day",)}),
    Case("daily across spring forward, two days", "Europe/Berlin", BERLIN_SPRING,
         RetentionRule(day_backups=2, timezone="Europe/Berlin"), "2024-04-01 12:00",
         {"mon-0000": ("day",), "sun-2359": ("day",)}),
    Case("daily across fall back (25-hour day)", "Europe/Berlin", BERLIN_FALL,
         RetentionRule(day_backups=3, timezone="Europe/Berlin"), "2024-10-28 12:00",
         {"mon-0000": ("day",), "sun-2359": ("day",), "sat-2359": ("day",)}),
    Case("repeated hour: the second 02:30 is the newer", "Europe/Berlin", BERLIN_FALL[1:4],
         RetentionRule(day_backups=1, timezone="Europe/Berlin"), "2024-10-28 12:00",
         {"sun-0230b": ("day",)}),
    Case("daily in a fixed offset is not the UTC day", "UTC+01:00", BERLIN_SPRING,
         RetentionRule(day_backups=2, timezone="UTC+01:00"), "2024-04-01 12:00",
         # Wall times read as UTC+01:00: mon-0000 is still 1 April, 03:30 is 03:30.
         {"mon-0000": ("day",), "sun-2359": ("day",)}),

    Case("ISO week: Sunday 23:59 and Monday 00:00", "UTC+08:00",
         [auto("w23-mon", "2024-06-03 00:00"), auto("w23-sun", "2024-06-09 23:59"),
          auto("w24-mon", "2024-06-10 00:00")],
         RetentionRule(week_backups=2, timezone="UTC+08:00"), "2024-06-11 00:00",
         {"w24-mon": ("week",), "w23-sun": ("week",)}),
    Case("ISO week: one week", "UTC+08:00",
         [auto("w23-sun", "2024-06-09 23:59"), auto("w24-mon", "2024-06-10 00:00")],
         RetentionRule(week_backups=1, timezone="UTC+08:00"), "2024-06-11 00:00", {"w24-mon": ("week",)}),
    Case("ISO week 1 starting in December", "Europe/Berlin", ISO_NEW_YEAR,
         RetentionRule(week_backups=3, timezone="Europe/Berlin"), "2025-01-07 00:00",
         {"jan06-mon": ("week",), "jan05-sun": ("week",), "dec29-sun": ("week",)}),

    Case("months in UTC+08:00", "UTC+08:00", NEW_YEAR_PLUS8,
         RetentionRule(month_backups=3, timezone="UTC+08:00"), "2025-01-02 00:00",
         {"jan01-local": ("month",), "dec31-local": ("month",), "nov30-local": ("month",)}),
    Case("years in UTC+08:00", "UTC+08:00", NEW_YEAR_PLUS8,
         RetentionRule(year_backups=2, timezone="UTC+08:00"), "2025-01-02 00:00",
         {"jan01-local": ("year",), "dec31-local": ("year",)}),
    Case("the same backups read in UTC", "UTC", NEW_YEAR_PLUS8[:2] + NEW_YEAR_PLUS8[3:],
         RetentionRule(year_backups=2, month_backups=2, timezone="UTC"), "2025-01-02 00:00",
         # All four fall in 2024 in UTC; the newest two months are December and November.
         {"jan01-local": ("month", "year"), "dec01-local": ("month",)}),

    Case("union: day=5 + week=1 keeps five", "Europe/Berlin", DAILY_JUNE,
         RetentionRule(day_backups=5, week_backups=1, timezone="Europe/Berlin"), "2024-06-15 00:00",
         {"jun14": ("day", "week"), "jun13": ("day",), "jun12": ("day",), "jun11": ("day",),
          "jun10": ("day",)}),
    Case("union: day=5 + week=2 reaches back a week", "Europe/Berlin", DAILY_JUNE,
         RetentionRule(day_backups=5, week_backups=2, timezone="Europe/Berlin"), "2024-06-15 00:00",
         {"jun14": ("day", "week"), "jun13": ("day",), "jun12": ("day",), "jun11": ("day",),
          "jun10": ("day",), "jun09": ("week",)}),
    Case("max_backups and GFS overlap", "UTC",
         [auto(f"d{d}-{h:02}", f"2024-06-0{d} {h:02}:00") for d in (1, 2, 3) for h in (8, 20)],
         RetentionRule(max_backups=3, day_backups=2, timezone="UTC"), "2024-06-04 00:00",
         {"d3-20": ("max_backups", "day"), "d3-08": ("max_backups",), "d2-20": ("max_backups", "day")}),
    Case("GFS reaches past max_backups", "UTC",
         [auto(f"d{d}-{h:02}", f"2024-06-0{d} {h:02}:00") for d in (1, 2, 3) for h in (8, 20)],
         RetentionRule(max_backups=2, day_backups=3, month_backups=1, timezone="UTC"), "2024-06-04 00:00",
         {"d3-20": ("max_backups", "day", "month"), "d3-08": ("max_backups",), "d2-20": ("day",),
          "d1-20": ("day",)}),

    Case("retention_duration_days", "UTC",
         [auto("future", "2024-06-16 00:00"), auto("fresh", "2024-06-15 11:00"),
          auto("just-inside", "2024-06-08 12:00:01"), auto("exactly-7-days", "2024-06-08 12:00"),
          auto("old", "2024-05-01 00:00")],
         RetentionRule(retention_duration_days=7), "2024-06-15 12:00",
         {"future": ("retention_duration",), "fresh": ("retention_duration",),
          "just-inside": ("retention_duration",)}),
    Case("retention_duration_days is 24-hour days, not local ones", "Europe/Berlin",
         [auto("inside", "2024-03-30 10:00:01"), auto("outside", "2024-03-30 10:00")],
         # now - 48 hours is 2024-03-30 10:00 local, an hour before the wall clock's 11:00: 31 March has 23.
         RetentionRule(retention_duration_days=2), "2024-04-01 11:00",
         {"inside": ("retention_duration",)}),

    Case("manual backups are never deleted and count for nothing", "UTC",
         [manual("m-new", "2024-06-05 00:00"), auto("a-new", "2024-06-04 00:00"),
          auto("a-old", "2024-06-03 00:00"), manual("m-old", "2020-01-01 00:00")],
         RetentionRule(max_backups=1), "2024-06-10 00:00",
         {"m-new": ("manual",), "a-new": ("max_backups",), "m-old": ("manual",)}),
    Case("manual backups outside every GFS period", "UTC",
         [manual("m", "2024-06-05 00:00"), auto("a", "2024-06-04 00:00"), auto("b", "2024-06-04 01:00")],
         RetentionRule(day_backups=1, timezone="UTC"), "2024-06-10 00:00",
         {"m": ("manual",), "b": ("day",)}),

    Case("no running backup: the newest may go", "UTC", RUNNING,
         RetentionRule(retention_duration_days=1), "2024-06-10 00:00", {}),
    Case("protecting backup keeps the newest available", "UTC",
         RUNNING + [auto("running", "2024-06-10 00:00", status="protecting")],
         RetentionRule(retention_duration_days=1), "2024-06-10 00:00", {"newest": ("newest_protected",)}),
    Case("waiting backup keeps the newest available", "UTC",
         RUNNING + [manual("queued", "2024-06-10 00:00", status="waiting_protect")],
         RetentionRule(retention_duration_days=1), "2024-06-10 00:00", {"newest": ("newest_protected",)}),
    Case("the protected one is the newest automatic backup", "UTC",
         RUNNING + [manual("m", "2024-06-05 00:00"), auto("running", "2024-06-10 00:00", status="protecting")],
         RetentionRule(max_backups=1), "2024-06-10 00:00",
         {"newest": ("max_backups", "newest_protected"), "m": ("manual",)}),

    Case("locked vault keeps the unexpired", "UTC", LOCKED, RetentionRule(max_backups=1), LOCKED_NOW,
         {"newest": ("max_backups",), "unexpired": ("locked",), "no-expiry": ("locked",),
          "manual": ("manual", "locked")}, vault_locked=True),
    Case("the same vault unlocked", "UTC", LOCKED, RetentionRule(max_backups=1), LOCKED_NOW,
         {"newest": ("max_backups",), "manual": ("manual",)}),
    Case("locked vault, no rule", "UTC", LOCKED, RetentionRule(), LOCKED_NOW,
         {"newest": ("permanent",), "expired": ("permanent",), "expires-now": ("permanent",),
          "unexpired": ("permanent", "locked"), "no-expiry": ("permanent", "locked"),
          "manual": ("manual", "locked")}, vault_locked=True),

    # A policy changed from a count to GFS: the same backups under the old rule, then the new one.
    Case("policy change, before: max_backups=3", "UTC+08:00", TWO_WEEKS,
         RetentionRule(max_backups=3), "2024-06-17 00:00",
         {"jun16-pm": ("max_backups",), "jun16": ("max_backups",), "jun15": ("max_backups",)}),
    Case("policy change, after: day=2 + week=2", "UTC+08:00", TWO_WEEKS,
         RetentionRule(day_backups=2, week_backups=2, timezone="UTC+08:00"), "2024-06-17 00:00",
         {"jun16-pm": ("day", "week"), "jun15": ("day",), "jun09": ("week",)}),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_decide(case):
    backups = views(case)
    now = at(case.now, parse_timezone(case.zone))
    decisions = retention.decide(backups, retention.check_rule(case.rule), now, vault_locked=case.vault_locked)

    assert {d.backup_id: d.reasons for d in decisions if d.keep} == case.kept
    assert all(d.reasons == () for d in decisions if not d.keep)
    available = sorted((b for b in backups if b.status == "available"),
                       key=lambda b: (-b.created_time.timestamp(), b.backup_id))
    assert [(d.backup_id, d.created_time) for d in decisions] == [(b.backup_id, b.created_time) for b in available]


def test_reasons_follow_one_order():
    decisions = retention.decide(
        [BackupView("a", at("2024-06-01 00:00", dt.timezone.utc), True, "available"),
         BackupView("r", at("2024-06-02 00:00", dt.timezone.utc), True, "protecting")],
        RetentionRule(max_backups=1, day_backups=1, week_backups=1, month_backups=1, year_backups=1,
                      timezone="UTC"),
        at("2024-06-02 00:00", dt.timezone.utc), vault_locked=True)
    assert decisions[0].reasons == ("max_backups", "day", "week", "month", "year", "newest_protected", "locked")


@pytest.mark.parametrize("rule", [
    RetentionRule(),
    RetentionRule(max_backups=1), RetentionRule(max_backups=99_999),
    RetentionRule(retention_duration_days=1), RetentionRule(retention_duration_days=99_999),
    RetentionRule(retention_duration_days=30, max_backups=-1),
    RetentionRule(day_backups=100, week_backups=100, month_backups=100, year_backups=100, timezone="UTC+08:00"),
    RetentionRule(max_backups=5, day_backups=5, timezone="Europe/Berlin"),
    RetentionRule(max_backups=5, timezone="UTC-03:30"),
])
def test_good_rules(rule):
    assert retention.check_rule(rule) is rule


@pytest.mark.parametrize("rule, error", [
    (RetentionRule(max_backups=0), errors.InvalidRetentionError),
    (RetentionRule(max_backups=-2), errors.InvalidRetentionError),
    (RetentionRule(max_backups=100_000), errors.InvalidRetentionError),
    (RetentionRule(max_backups=True), errors.InvalidRetentionError),
    (RetentionRule(max_backups="3"), errors.InvalidRetentionError),
    (RetentionRule(retention_duration_days=0), errors.InvalidRetentionError),
    (RetentionRule(retention_duration_days=-5), errors.InvalidRetentionError),
    (RetentionRule(retention_duration_days=100_000), errors.InvalidRetentionError),
    (RetentionRule(day_backups=-1, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(day_backups=101, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(week_backups=101, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(month_backups=-1, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(year_backups=101, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(year_backups=1.0, timezone="UTC"), errors.InvalidRetentionError),
    (RetentionRule(retention_duration_days=30, max_backups=5), errors.RetentionConflictError),
    (RetentionRule(retention_duration_days=30, day_backups=1, timezone="UTC"), errors.RetentionConflictError),
    (RetentionRule(retention_duration_days=30, year_backups=1, timezone="UTC"), errors.RetentionConflictError),
    (RetentionRule(day_backups=1), errors.GfsWithoutTimezoneError),
    (RetentionRule(max_backups=3, month_backups=1), errors.GfsWithoutTimezoneError),
    (RetentionRule(day_backups=1, timezone="UTC+8"), errors.InvalidTimezoneError),
    (RetentionRule(day_backups=1, timezone="UTC+15:00"), errors.InvalidTimezoneError),
    (RetentionRule(week_backups=1, timezone="Mars/Olympus_Mons"), errors.InvalidTimezoneError),
    (RetentionRule(max_backups=3, timezone="GMT+1"), errors.InvalidTimezoneError),
])
def test_bad_rules(rule, error):
    with pytest.raises(error):
        retention.check_rule(rule)


def reference_decide(backups, rule, now, zone):
    """The slow oracle: every backup converted with astimezone, periods named by isocalendar."""
    autos = sorted((b for b in backups if b.auto_trigger and b.status == "available"),
                   key=lambda b: (-b.created_time.timestamp(), b.backup_id))
    kept = {b.backup_id: [] for b in autos}
    if rule.max_backups > 0:
        for b in autos[:rule.max_backups]:
            kept[b.backup_id].append("max_backups")
    name_period = {"day": lambda d: d, "week": lambda d: d.isocalendar()[:2],
                   "month": lambda d: (d.year, d.month), "year": lambda d: d.year}
    for period, count in rule.gfs_counts().items():
        seen = []
        for b in autos:
            key = name_period[period](b.created_time.astimezone(zone).date())
            if key not in seen and len(seen) < count:
                seen.append(key)
                kept[b.backup_id].append(period)
    return {backup_id: tuple(reasons) for backup_id, reasons in kept.items() if reasons}


@pytest.mark.parametrize("zone_name", ["UTC", "UTC+08:00", "UTC-03:30", "UTC+14:00", "Europe/Berlin",
                                       "Australia/Lord_Howe", "America/Sao_Paulo"])
def test_agrees_with_the_slow_oracle(zone_name):
    # Lord Howe shifts by half an hour; Sao Paulo's clocks used to jump at midnight.
    zone, rng = parse_timezone(zone_name), random.Random(zone_name)
    when, backups = dt.datetime(2014, 1, 1, tzinfo=dt.timezone.utc), []
    for i in range(3000):
        when += dt.timedelta(minutes=rng.choice([1, 30, 59, 60, 61, 600, 1439, 1440, 2880, 20000]))
        backups.append(BackupView(f"b{i:05}", when, rng.random() < 0.9, "available"))
    rule = RetentionRule(max_backups=7, day_backups=60, week_backups=50, month_backups=40, year_backups=5,
                         timezone=zone_name)
    decisions = retention.decide(backups, rule, when)
    expected = reference_decide(backups, rule, when, zone)
    assert {d.backup_id: d.reasons for d in decisions if d.keep and d.reasons != ("manual",)} == expected


@pytest.mark.parametrize("zone_name", ["UTC+08:00", "Europe/Berlin"])
def test_a_hundred_thousand_backups(zone_name):
    start = dt.datetime(2014, 1, 1, tzinfo=dt.timezone.utc)
    backups = [BackupView(f"b{i:06}", start + dt.timedelta(hours=i), True, "available") for i in range(100_000)]
    rule = RetentionRule(max_backups=10, day_backups=100, week_backups=100, month_backups=100,
                         year_backups=100, timezone=zone_name)   # year=100 walks all 100,000
    began = time.perf_counter()
    decisions = retention.decide(backups, rule, start + dt.timedelta(hours=100_000))
    elapsed = time.perf_counter() - began
    print(f"decide over 100,000 backups in {zone_name}: {elapsed * 1000:.0f} ms")

    counts = Counter(reason for d in decisions for reason in d.reasons)
    # 100,000 hours from 2014-01-01 run into May 2025: twelve calendar years.
    assert (len(decisions), counts["max_backups"], counts["day"], counts["week"], counts["month"],
            counts["year"]) == (100_000, 10, 100, 100, 100, 12)

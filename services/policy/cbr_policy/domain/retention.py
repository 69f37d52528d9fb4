"""The retention rule as a pure function: which of a vault's backups a policy keeps, and why.

`decide` answers for one rule over one list of backups; the retention run and the preview RPC both call it.
What it does, and where each choice comes from (CBR's documentation where it speaks, Proxmox Backup
Server's prune, "PBS", where it is silent):

- Scope (CBR): only automatic backups are ever deleted. A manual backup is kept with reason "manual" and
  counts towards no rule. Backups that are not `available` (protecting, waiting_protect, deleting, error,
  ...) are not decided on at all and do not appear in the result.
- Newest protected (CBR: "the most recent backup cannot be deleted while the next backup task is
  running"): while any backup is protecting or waiting_protect, the newest available automatic backup
  is kept with reason "newest_protected".
- Rules run over the available automatic backups, newest first, each on its own; a backup is kept when
  any rule keeps it (CBR's union: "day=5 + week=1 keeps five backups total", and GFS backups "are not
  subject to the max_backups limit"). PBS differs here: its later keep-* options skip periods an earlier
  option already covered and so reach further back; we follow CBR.
  * "max_backups": the newest N.
  * "retention_duration": created_time > now - N days, days being 24-hour spans (no time zone needed).
  * "day" / "week" / "month" / "year" (PBS keep-daily etc.): for each of the N most recent periods that
    hold a backup, the newest backup of that period; periods without a backup do not count. Periods are
    read in the rule's time zone: the calendar day from local midnight to local midnight (23 or 25 hours
    across a DST change), the ISO week Monday to Sunday (as PBS; the week, not the calendar year, is the
    unit, so 2024-12-30 and 2025-01-05 share 2025-W01), the calendar month, the calendar year.
  * "permanent": no rule at all (max_backups and retention_duration_days -1, GFS counts 0) keeps all.
  A rule that is off adds nothing; with only GFS counts, backups that no GFS rule keeps are deleted.
- Locked vault (CBR): a backup that has not expired is never deleted, reason "locked"; expired means
  expired_time is set and <= now, so a backup without expired_time is always kept in a locked vault.
  This holds for manual backups too (their reasons are then "manual", "locked").
- Times may carry any zone and are compared as instants (the second 02:30 of a fall-back night is newer).
- Order: newest first; among equal created_time the smaller backup_id counts as newer (PBS never meets
  a tie, its snapshots are named by their time; this keeps the answer deterministic). Reasons come in the order of REASONS.
- A policy change: the retention run (service/retention_runs.py) applies the policy's current rule to all of
  the vault's automatic backups. CBR's finer rules for a changed rule (count to time leaves the old backups,
  time to count keeps the union of both) are not modelled; a caller that wants them can call `decide` once
  per rule over the backups each applies to and keep the union.

`check_rule` validates a rule as it is stored; `decide` assumes a checked rule.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from cbr_policy.domain import errors
from cbr_policy.domain.timezones import parse_timezone

MAX_COUNT = 99_999
MAX_GFS = 100
RUNNING_STATUSES = frozenset({"protecting", "waiting_protect"})
REASONS = ("manual", "permanent", "max_backups", "retention_duration", "day", "week", "month", "year",
           "newest_protected", "locked")
BIT = {reason: 1 << i for i, reason in enumerate(REASONS)}
GFS_PERIODS = ("day", "week", "month", "year")

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = EPOCH.date().toordinal()
ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    max_backups: int = -1                # -1: no count limit
    retention_duration_days: int = -1    # -1: keep for ever; never with max_backups > 0 or GFS
    day_backups: int = 0
    week_backups: int = 0
    month_backups: int = 0
    year_backups: int = 0
    timezone: str = ""                   # required with any GFS count

    def gfs_counts(self) -> dict[str, int]:
        return {"day": self.day_backups, "week": self.week_backups,
                "month": self.month_backups, "year": self.year_backups}

    def is_permanent(self) -> bool:
        return (self.max_backups == -1 and self.retention_duration_days == -1
                and not any(self.gfs_counts().values()))


@dataclass(frozen=True, slots=True)
class BackupView:
    """What the backup service's ListBackups tells about one backup."""
    backup_id: str
    created_time: dt.datetime   # aware
    auto_trigger: bool
    status: str
    expired_time: dt.datetime | None = None
    policy_id: str = ""         # the policy that made it (auto replicas: the source region's replication policy)


@dataclass(frozen=True, slots=True)
class Decision:
    backup_id: str
    created_time: dt.datetime
    keep: bool
    reasons: tuple[str, ...]    # every rule that keeps it, in REASONS order; empty when deleted


def check_rule(rule: RetentionRule) -> RetentionRule:
    """The rule unchanged, or the first thing wrong with it as a policy error."""
    for name in ("max_backups", "retention_duration_days"):
        value = getattr(rule, name)
        if not _is_int(value) or not (value == -1 or 1 <= value <= MAX_COUNT):
            raise errors.InvalidRetentionError(f"{name} must be -1 or 1..{MAX_COUNT}, got {value!r}")
    for period, value in rule.gfs_counts().items():
        if not _is_int(value) or not 0 <= value <= MAX_GFS:
            raise errors.InvalidRetentionError(f"{period}_backups must be 0..{MAX_GFS}, got {value!r}")
    has_gfs = any(rule.gfs_counts().values())
    if rule.retention_duration_days != -1 and (rule.max_backups > 0 or has_gfs):
        raise errors.RetentionConflictError(
            "retention_duration_days cannot be combined with max_backups or day/week/month/year_backups")
    if has_gfs and not rule.timezone:
        raise errors.GfsWithoutTimezoneError("day/week/month/year_backups need a timezone such as UTC+08:00")
    if rule.timezone:
        parse_timezone(rule.timezone)
    return rule


def decide(backups: Iterable[BackupView], rule: RetentionRule, now: dt.datetime, *,
           vault_locked: bool = False) -> list[Decision]:
    """One decision per available backup, newest first; see the module docstring for the rules."""
    available = []
    running = False
    for backup in backups:
        if backup.status == "available":
            available.append(backup)
        elif backup.status in RUNNING_STATUSES:
            running = True
    # Compare instants in UTC: aware datetimes sharing a tzinfo compare and subtract by wall time, which
    # gets the repeated hour of a DST fall-back wrong.
    now_utc = now.astimezone(UTC)
    available.sort(key=attrgetter("backup_id"))
    created = [backup.created_time.astimezone(UTC) for backup in available]
    order = sorted(range(len(available)), key=created.__getitem__, reverse=True)   # stable: ids stay ascending
    available = [available[i] for i in order]
    created = [created[i] for i in order]

    masks = [0] * len(available)
    auto = [i for i, backup in enumerate(available) if backup.auto_trigger]
    for i, backup in enumerate(available):
        if not backup.auto_trigger:
            masks[i] |= BIT["manual"]
    if rule.is_permanent():
        for i in auto:
            masks[i] |= BIT["permanent"]
    if rule.max_backups > 0:
        for i in auto[:rule.max_backups]:
            masks[i] |= BIT["max_backups"]
    if rule.retention_duration_days > 0:
        cutoff = now_utc - dt.timedelta(days=rule.retention_duration_days)
        for i in auto:
            if created[i] <= cutoff:
                break
            masks[i] |= BIT["retention_duration"]
    if any(rule.gfs_counts().values()):
        _mark_gfs(created, auto, rule, masks)
    if running and auto:
        masks[auto[0]] |= BIT["newest_protected"]
    if vault_locked:
        for i, backup in enumerate(available):
            if backup.expired_time is None or backup.expired_time.astimezone(UTC) > now_utc:
                masks[i] |= BIT["locked"]

    reasons_of: dict[int, tuple[str, ...]] = {}
    decisions = []
    for backup, mask in zip(available, masks):
        reasons = reasons_of.get(mask)
        if reasons is None:
            reasons = reasons_of[mask] = tuple(r for r in REASONS if mask & BIT[r])
        decisions.append(Decision(backup.backup_id, backup.created_time, bool(mask), reasons))
    return decisions


def _mark_gfs(created: list[dt.datetime], auto: list[int], rule: RetentionRule, masks: list[int]) -> None:
    """Keep the newest backup of each of the N most recent periods holding a backup, per GFS rule."""
    unfilled = [(GFS_PERIODS.index(period), count, BIT[period], set())
                for period, count in rule.gfs_counts().items() if count > 0]
    local_day = _local_day_ordinal(parse_timezone(rule.timezone))
    last_ordinal = None
    for i in auto:
        ordinal = local_day(created[i])
        if ordinal == last_ordinal:
            continue   # a newer backup of the same day already met this day's week, month and year
        last_ordinal = ordinal
        keys = _period_keys(ordinal)
        for state in unfilled:
            slot, count, bit, seen = state
            if keys[slot] not in seen:
                # Newest first, so the first backup met in a period is that period's newest. The set, not
                # a last-key check, because local dates need not fall monotonically (odd DST histories).
                seen.add(keys[slot])
                masks[i] |= bit
                if len(seen) == count:
                    unfilled = [other for other in unfilled if other is not state]
        if not unfilled:
            return


def _local_day_ordinal(zone: dt.tzinfo):
    """A function from an aware time to the proleptic ordinal of its calendar date in `zone`."""
    if isinstance(zone, dt.timezone):
        # A fixed offset needs no zone lookup per backup: whole days since the local epoch, exactly.
        local_epoch = EPOCH - zone.utcoffset(None)
        return lambda when: (when - local_epoch) // ONE_DAY + EPOCH_ORDINAL
    return lambda when: when.astimezone(zone).toordinal()


def _period_keys(ordinal: int) -> tuple[int, int, int, int]:
    """Keys naming the day, ISO week, month and year of a date given as its ordinal."""
    date = dt.date.fromordinal(ordinal)
    # Ordinal 1 (0001-01-01) is a Monday, so this numbers Monday-to-Sunday weeks.
    return ordinal, (ordinal - 1) // 7, date.year * 12 + date.month - 1, date.year


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

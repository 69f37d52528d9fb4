"""Policies (CBR v3 /policies) and the vaults bound to them, as plain dataclasses."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cbr_policy.domain.retention import RetentionRule


OPERATION_TYPES = ("backup", "replication")
UNSET = -1  # CBR's "no limit" for max_backups, retention_duration_days and full_backup_interval


@dataclass(frozen=True)
class Trigger:
    """When the policy fires: RRULE patterns (domain/schedule.py) read in the operation definition's timezone."""
    patterns: tuple[str, ...] = ()
    start_time: dt.datetime | None = None  # no fire before it; stored policies always have one


@dataclass(frozen=True)
class OperationDefinition:
    """What the policy keeps and where it replicates to; -1 means unset, as in CBR."""
    max_backups: int = UNSET
    retention_duration_days: int = UNSET
    day_backups: int = 0
    week_backups: int = 0
    month_backups: int = 0
    year_backups: int = 0
    timezone: str = ""
    destination_region: str = ""
    destination_project_id: str = ""
    full_backup_interval: int = UNSET

    def retention_rule(self) -> RetentionRule:
        return RetentionRule(max_backups=self.max_backups, retention_duration_days=self.retention_duration_days,
                             day_backups=self.day_backups, week_backups=self.week_backups,
                             month_backups=self.month_backups, year_backups=self.year_backups,
                             timezone=self.timezone)


@dataclass(frozen=True)
class AssociatedVault:
    """A vault the policy applies to, as the vault service announced it."""
    vault_id: str
    destination_vault_id: str = ""  # replication policies only
    bound_time: dt.datetime | None = None


@dataclass
class Policy:
    policy_id: str
    project_id: str
    name: str
    operation_type: str
    enabled: bool
    trigger: Trigger
    operation_definition: OperationDefinition
    created_time: dt.datetime
    updated_time: dt.datetime
    associated_vaults: list[AssociatedVault] = field(default_factory=list)

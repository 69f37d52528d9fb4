"""Replication lag: per resource and destination region, the age of the oldest eligible backup (available, taken
here, not corrupt) without a replica there (a SUCCESS record into any vault of that region)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from cbr_replication.domain.model import ReplicationRecord, SourceBackup


@dataclass(frozen=True)
class Lag:
    resource_id: str
    resource_type: str
    destination_region: str
    oldest_unreplicated: SourceBackup | None  # None: every eligible backup has a replica there
    lag: dt.timedelta                         # its age; zero without one
    unreplicated_backups: int
    newest_replicated_backup_id: str


def replication_lag(backups: Iterable[SourceBackup], records: Iterable[ReplicationRecord], regions: Iterable[str],
                    now: dt.datetime) -> list[Lag]:
    """One Lag per (resource, region), by resource id then region; `backups` are the eligible ones."""
    replicated = {(r.source_backup_id, r.destination.region) for r in records if r.status == "success"}
    by_resource: dict[str, list[SourceBackup]] = {}
    for backup in backups:
        by_resource.setdefault(backup.resource_id, []).append(backup)
    lags = []
    for resource_id in sorted(by_resource):
        ordered = sorted(by_resource[resource_id], key=lambda b: (b.created_time or now, b.backup_id))
        for region in sorted(set(regions)):
            missing = [b for b in ordered if (b.backup_id, region) not in replicated]
            done = [b for b in ordered if (b.backup_id, region) in replicated]
            oldest = missing[0] if missing else None
            age = max(now - (oldest.created_time or now), dt.timedelta(0)) if oldest else dt.timedelta(0)
            lags.append(Lag(resource_id, ordered[0].resource_type, region, oldest, age, len(missing),
                            done[-1].backup_id if done else ""))
    return lags

"""The rules a replication request must pass before anything is written, and how a task update moves a record.

Pure functions: each refusal is its own error (domain/errors.py); nothing here reads a database or a peer."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Iterable

from cbr_common import request_checks
from cbr_common.echo import short
from cbr_replication.domain import errors
from cbr_replication.domain.model import OPEN_STATUSES, STATUSES, TASK_STATES, Destination, ReplicationRecord, \
    SourceBackup, TaskUpdate

MAX_PROJECT_ID = 64
MAX_NAME = 64
MAX_DESCRIPTION = 255
# The replica is a backup of the destination: its name and description follow the backup service's rules.
NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f!<>=&\"'/\\]")
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{0,64}")


def check_id(value: str, what: str) -> str:
    return request_checks.canonical_id(value, what, errors.MalformedRequestError)


def check_optional_id(value: str, what: str) -> str:
    return check_id(value, what) if value else ""


def check_project_id(value: str, what: str = "destination_project_id") -> str:
    if not value or len(value) > MAX_PROJECT_ID or any(c.isspace() or not c.isprintable() for c in value):
        raise errors.MalformedRequestError(f"{what} must be 1-{MAX_PROJECT_ID} printable characters without "
                                           f"spaces, got {short(value)}")
    return value


def check_name(name: str) -> str:
    """Empty keeps the source backup's name."""
    if len(name) > MAX_NAME or NAME_FORBIDDEN.search(name):
        raise errors.MalformedRequestError(
            f"name must be 0-{MAX_NAME} characters without control characters or !<>=&\"'/\\")
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION or NAME_FORBIDDEN.search(description.replace("/", "")):
        raise errors.MalformedRequestError(
            f"description must be at most {MAX_DESCRIPTION} characters without control characters or !<>=&\"'\\")
    return description


MAX_RATE_LIMIT_MBPS = 1_000_000.0  # a terabyte a second: anything above is a typo, not a pace


def check_rate_limit(rate_limit_mbps: float) -> float:
    """A replication's pace in MB/s: 0 (none) or a positive finite number (DESIGN 17.11)."""
    if not 0 <= rate_limit_mbps <= MAX_RATE_LIMIT_MBPS:  # also false for NaN
        raise errors.MalformedRequestError(
            f"rate_limit_mbps must be 0 (no limit) or a number of MB/s up to {MAX_RATE_LIMIT_MBPS:.0f}")
    return rate_limit_mbps


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID.fullmatch(request_id):
        raise errors.MalformedRequestError("request_id must be 0-64 letters, digits, '_' or '-'")
    return request_id


def check_destination(destination: Destination, local_region: str, peers: Iterable[str]) -> Destination:
    """Well-formed ids, and a region this region's directory names as a peer."""
    check_project_id(destination.project_id)
    check_id(destination.vault_id, "destination_vault_id")
    check_region(destination.region, local_region, peers)
    return destination


def check_region(region: str, local_region: str, peers: Iterable[str]) -> str:
    """A region this region's directory names as a peer."""
    peers = list(peers)
    if region == local_region:
        raise errors.SameRegionError(f"destination_region {region} is this region: a replica goes to another "
                                     f"region")
    if region not in peers:
        known = ", ".join(peers) or "none"
        raise errors.UnknownRegionError(f"destination_region {short(region)} is not in this region's directory "
                                        f"(its peers: {known})")
    return region


def check_source(backup: SourceBackup) -> SourceBackup:
    """A backup that may be replicated: this region's own, whole, available and not known to be corrupt."""
    if backup.image_type == "replication":
        raise errors.BackupIsReplicaError(f"backup {backup.backup_id} is a replica from another region: "
                                          f"replicas are never replicated again")
    if backup.parent_id:
        raise errors.BackupNotAvailableError(
            f"backup {backup.backup_id} is one disk of server backup {backup.parent_id}: replicate that one")
    if backup.status != "available":
        raise errors.BackupNotAvailableError(f"backup {backup.backup_id} is {backup.status}, not available")
    if backup.corrupt:
        raise errors.BackupCorruptError(f"backup {backup.backup_id} failed its last verify (corrupt)")
    return backup


def check_status_filter(status: str) -> str:
    if status and status not in STATUSES:
        raise errors.MalformedRequestError(f"status {short(status)} is not a replication status")
    return status


def check_page(limit: int, offset: int) -> tuple[int, int]:
    return request_checks.page_bounds(limit, offset, errors.MalformedRequestError)


def same_request(record: ReplicationRecord, backup_id: str, destination: Destination, name: str,
                 description: str) -> bool:
    """Whether a ReplicateBackup repeats the one that made `record` (an empty name or description: the
    source's, so any)."""
    return (record.source_backup_id == backup_id and record.destination == destination
            and (not name or name == record.name) and (not description or description == record.description))


def standing_record(records: Iterable[ReplicationRecord]) -> ReplicationRecord | None:
    """Of a backup's records for one destination vault, the one a new request answers with: its replica there
    (SUCCESS), or the replication still under way; None when a new record is due (none yet, or the last
    one failed or was cancelled)."""
    records = list(records)
    return next((r for r in records if r.status == "success"), None) or \
        next((r for r in records if r.status in OPEN_STATUSES), None)


def apply_update(record: ReplicationRecord, update: TaskUpdate, now: dt.datetime) -> ReplicationRecord | None:
    """The record after the task's update, or None when the update changes nothing: it is another project's,
    an older attempt's, or it comes after the record ended (a final record never moves back).

    Updates arrive on one subject per state, so out of order: progress may come before started, an old
    attempt's progress after the next attempt started."""
    if update.project_id != record.project_id or update.state not in TASK_STATES:
        return None
    task_id = record.task_id or update.task_id
    if update.state == "created":
        return dataclasses.replace(record, task_id=task_id, updated_time=now) if task_id != record.task_id else None
    if record.final or update.attempt < record.attempt:
        return None
    counters = update.counters or record.counters
    if update.state in ("started", "progress") and record.status == "waiting" and 0 < update.attempt <= \
            record.attempt:
        return None  # that attempt's retrying came first: it ended; the next attempt's started moves the record
    if update.state in ("started", "progress"):
        changes = dict(status="replicating", attempt=update.attempt, task_id=task_id,
                       started_time=record.started_time or now, updated_time=now)
        if update.state == "progress":
            changes.update(progress=min(max(update.progress, 0), 100), bytes_done=update.bytes_done,
                           bytes_total=update.bytes_total, counters=counters)
        return dataclasses.replace(record, **changes)
    if update.state == "retrying":  # the attempt ended; the next one's started moves it on
        return dataclasses.replace(record, status="waiting", attempt=update.attempt, task_id=task_id,
                                   counters=counters, error_code=update.error_code,
                                   error_message=update.error_message, updated_time=now)
    ended = dict(task_id=task_id, attempt=max(update.attempt, record.attempt), counters=counters,
                 started_time=record.started_time or now, ended_time=now, updated_time=now)
    if update.state == "completed":
        if not update.source_manifest_digest or update.source_manifest_digest != update.replica_manifest_digest:
            # The replica is not proven to be the source's: never a SUCCESS (DESIGN 17.9).
            return dataclasses.replace(
                record, status="failed", source_manifest_digest=update.source_manifest_digest,
                replica_manifest_digest=update.replica_manifest_digest, error_code=errors.DIGESTS_DIFFER,
                error_message="the replica's manifest digest differs from the source's", **ended)
        return dataclasses.replace(
            record, status="success", progress=100, bytes_done=max(update.bytes_done, update.bytes_total),
            error_code="", error_message="",  # an earlier attempt's error is not the record's
            bytes_total=update.bytes_total, destination_backup_id=update.destination_backup_id,
            source_manifest_digest=update.source_manifest_digest,
            replica_manifest_digest=update.replica_manifest_digest, **ended)
    if update.state == "failed":
        return dataclasses.replace(record, status="failed", error_code=update.error_code,
                                   error_message=update.error_message or "the replication task failed", **ended)
    return dataclasses.replace(record, status="cancelled", error_code=update.error_code,
                               error_message=update.error_message or "cancelled", **ended)

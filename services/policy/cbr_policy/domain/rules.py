"""The CBR rules a policy must satisfy, as pure checks that raise before anything is written."""
from __future__ import annotations

import datetime as dt
import re

from cbr_common import request_checks
from cbr_policy.domain import errors
from cbr_policy.domain.model import OPERATION_TYPES, UNSET, OperationDefinition, Trigger
from cbr_policy.domain.retention import check_rule
from cbr_policy.domain.schedule import Schedule, parse_schedule

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_POLICIES_PER_TYPE = 32  # per project, as CBR's account limit
MAX_DESTINATION = 255
MAX_FULL_BACKUP_INTERVAL = 100
# start_time must name a plausible date: the schedule's arithmetic stays far from the calendar's ends.
EARLIEST_START = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise errors.InvalidNameError("policy name must be 1-64 characters of letters, digits, '_' and '-'")
    return name


def check_operation_type(operation_type: str) -> str:
    if operation_type not in OPERATION_TYPES:
        raise errors.UnknownOperationTypeError("operation_type must be backup or replication")
    return operation_type


def check_operation_definition(operation_type: str, definition: OperationDefinition,
                               current_region: str) -> OperationDefinition:
    """Retention counts and their combinations, the time zone, the replication destination, the full-backup
    interval: the first thing wrong, as its own error."""
    check_rule(definition.retention_rule())
    if operation_type == "replication":
        region, project = definition.destination_region, definition.destination_project_id
        for what, value in (("destination_region", region), ("destination_project_id", project)):
            if not value or len(value) > MAX_DESTINATION or any(c.isspace() or not c.isprintable() for c in value):
                raise errors.InvalidDestinationError(
                    f"replication policies need {what}: 1-{MAX_DESTINATION} printable characters, no spaces")
        if region == current_region:
            raise errors.InvalidDestinationError(
                f"destination_region must be another region than this one ({current_region})")
    elif definition.destination_region or definition.destination_project_id:
        raise errors.InvalidDestinationError(
            "destination_region and destination_project_id are for replication policies only")
    interval = definition.full_backup_interval
    if not (interval == UNSET or 1 <= interval <= MAX_FULL_BACKUP_INTERVAL):
        raise errors.InvalidFullBackupIntervalError(
            f"full_backup_interval must be -1 or 1..{MAX_FULL_BACKUP_INTERVAL}, got {interval}")
    if interval != UNSET and operation_type != "backup":
        raise errors.InvalidFullBackupIntervalError("full_backup_interval is for backup policies only")
    return definition


def check_trigger(trigger: Trigger, timezone: str, default_start: dt.datetime) -> tuple[Trigger, Schedule]:
    """The trigger as stored (start_time filled in with `default_start` when unset) and its schedule."""
    start = trigger.start_time or default_start
    if not EARLIEST_START <= start < LATEST_START:
        raise errors.InvalidTimeRangeError(
            f"trigger start_time must be in {EARLIEST_START.year}..{LATEST_START.year - 1}, got {start.isoformat()}")
    schedule = parse_schedule(trigger.patterns, timezone, start)
    return Trigger(patterns=tuple(trigger.patterns), start_time=start), schedule


def check_id(value: str, what: str) -> str:
    return request_checks.canonical_id(value, what, errors.InvalidIdError)


def check_page(limit: int, offset: int) -> tuple[int, int]:
    return request_checks.page_bounds(limit, offset, errors.InvalidPagingError)

"""A refused call as one line that names what the user typed: request field names become the command's flags."""
from __future__ import annotations

import re
from typing import Mapping

import grpc

from cbr_common.grpc_errors import cbr_code_of

# Request field -> what the user typed to set it, where the commands agree: ids are mostly positional arguments.
# A command that sets a field otherwise (`cbr backup list --vault`) says so in its own `fields`.
FIELD_FLAGS = {
    "vault_id": "VAULT_ID", "backup_id": "BACKUP_ID", "policy_id": "POLICY_ID", "task_id": "TASK_ID",
    "checkpoint_id": "CHECKPOINT_ID", "disk_id": "DISK_ID", "disk_ids": "DISK_ID", "file_system_id": "--file-system",
    "resource_id": "RESOURCE_ID", "resource_ids": "RESOURCE_ID", "destination_vault_id": "--destination-vault",
    "size_gb": "--size (in GiB)", "size_bytes": "--size", "new_size_bytes": "--size",
    "resource_details.resource_id": "--exclude", "exclude_volumes": "--exclude", "backup_policy_id": "--policy",
    "object_type": "--type", "resource_type": "--type", "operation_type": "--type", "protect_type": "--protect",
    "consistent_level": "--consistent-level", "image_type": "--image-type", "bind_rules": "--bind-rule",
    "smn_notify": "--smn-notify", "threshold": "--threshold", "start_time": "--since", "end_time": "--until",
    "parent_id": "--parent", "limit": "--limit", "offset": "--offset",
    "volume_id": "--disk", "server_id": "--server", "target_path": "--target-path", "mappings": "--map",
    "mappings.backup_id": "--map CHILD_BACKUP_ID", "mappings.volume_id": "--map DISK_ID",
    "backup_ids": "--backup-id", "grace_seconds": "--grace-seconds",
    "trigger.patterns": "--pattern", "trigger.start_time": "--start", "max_backups": "--max-backups",
    "retention_duration_days": "--retention-days", "day_backups": "--day-backups", "week_backups": "--week-backups",
    "month_backups": "--month-backups", "year_backups": "--year-backups", "timezone": "--timezone",
    "full_backup_interval": "--full-backup-interval", "destination_region": "--destination-region",
    "destination_project_id": "--destination-project",
}
# The options of the list commands that filter by an id.
LIST_FILTERS = {"vault_id": "--vault", "resource_id": "--resource", "policy_id": "--policy",
                "checkpoint_id": "--checkpoint"}


def describe(error: grpc.aio.AioRpcError, fields: Mapping[str, str] | None = None) -> str:
    """INVALID_ARGUMENT (BackupService.6401): --size (in GiB) must be 1..10485760, got 0"""
    cbr_code = cbr_code_of(error)
    details = with_flags(error.details() or "no details", {**FIELD_FLAGS, **(fields or {})})
    return f"{error.code().name}{f' ({cbr_code})' if cbr_code else ''}: {details}"


def with_flags(text: str, flags: Mapping[str, str]) -> str:
    """Each field name of `flags` standing as a word of its own in `text` (not inside a longer name) replaced."""
    if not flags:
        return text
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w.\-])({names})(?![\w.\-])", lambda match: flags[match[1]], text)

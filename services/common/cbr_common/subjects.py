"""Every event's subject, in one table keyed by its message type: publishers and consumers derive it from here.

Subjects are `cbr.<producer>.<event>` (restores are the backup service's, under `cbr.restore.`). A message type
that carries two events (resources added or removed, a policy associated or dissociated) is keyed with the
event's kind as well.
"""
from __future__ import annotations

from cbr.events.v1 import audit_events_pb2 as audit
from cbr.events.v1 import backup_events_pb2 as backup
from cbr.events.v1 import policy_events_pb2 as policy
from cbr.events.v1 import replication_events_pb2 as replication
from cbr.events.v1 import vault_events_pb2 as vault

SUBJECTS = {
    audit.AuditRecorded: "cbr.audit.recorded",  # from every service's server (cbr_common/audit.py)
    backup.BackupCompleted: "cbr.backup.completed",
    backup.BackupFailed: "cbr.backup.failed",
    backup.BackupDeleted: "cbr.backup.deleted",
    backup.VaultBackupsPurged: "cbr.backup.vault_purged",
    backup.VaultUsageMeasured: "cbr.backup.vault_usage",
    backup.RestoreCompleted: "cbr.restore.completed",
    backup.RestoreFailed: "cbr.restore.failed",
    policy.PolicyCreated: "cbr.policy.created",
    policy.PolicyUpdated: "cbr.policy.updated",
    policy.PolicyDeleted: "cbr.policy.deleted",
    policy.PolicyTriggered: "cbr.policy.triggered",
    policy.RetentionApplied: "cbr.policy.retention_applied",
    replication.ReplicationCompleted: "cbr.replication.completed",
    replication.ReplicationFailed: "cbr.replication.failed",
    replication.ReplicationRequested: "cbr.replication.requested",
    replication.ReplicationLagging: "cbr.replication.lagging",
    # The backup service's side of a replication record: one message type, one subject per state.
    **{(replication.ReplicationTaskUpdate, state): f"cbr.backup.replication_{state}"
       for state in ("created", "started", "progress", "retrying", "completed", "failed", "cancelled")},
    vault.VaultCreated: "cbr.vault.created",
    vault.VaultUpdated: "cbr.vault.updated",
    vault.VaultDeleteRequested: "cbr.vault.delete_requested",
    vault.VaultDeleted: "cbr.vault.deleted",
    vault.VaultResourcesMigrated: "cbr.vault.resources_migrated",
    (vault.VaultResourcesChanged, "added"): "cbr.vault.resources_added",
    (vault.VaultResourcesChanged, "removed"): "cbr.vault.resources_removed",
    (vault.VaultPolicyChanged, "associated"): "cbr.vault.policy_associated",
    (vault.VaultPolicyChanged, "dissociated"): "cbr.vault.policy_dissociated",
}


def subject_of(message_type: type, kind: str = "") -> str:
    try:
        return SUBJECTS[(message_type, kind) if kind else message_type]
    except KeyError:
        raise LookupError(f"no event subject for {message_type.__name__} {kind!r}: add it to "
                          f"cbr_common/subjects.py") from None

"""Protobuf messages <-> backup domain objects and commands."""
from __future__ import annotations

import datetime as dt

from cbr.backup.v1 import backup_pb2, protectable_pb2, task_pb2
from cbr.common.v1 import common_pb2
from cbr_backup.domain.backups import Backup, BackupFilter, Checkpoint, check_statuses, parse_sort
from cbr_backup.domain.model import Protectable, Task
from cbr_backup.service.commands import ListProtectables, ListTasks
from cbr_common.proto_enums import enum_name, enum_value

# The domain says "in-use" as CBR does; the enum says IN_USE.
STATUS_TO_PROTO = {"available": protectable_pb2.PROTECTABLE_STATUS_AVAILABLE,
                   "in-use": protectable_pb2.PROTECTABLE_STATUS_IN_USE,
                   "restoring": protectable_pb2.PROTECTABLE_STATUS_RESTORING,
                   "error": protectable_pb2.PROTECTABLE_STATUS_ERROR}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}


def object_type(value: int) -> str:
    return enum_name(common_pb2.ObjectType, value)


def protectable_status(value: int) -> str:
    if value == protectable_pb2.PROTECTABLE_STATUS_UNSPECIFIED:
        return ""
    return STATUS_FROM_PROTO.get(value, "unknown")


def list_protectables_in(project_id: str, req: protectable_pb2.ListProtectablesRequest) -> ListProtectables:
    return ListProtectables(project_id=project_id, type=object_type(req.type), limit=req.page.limit,
                            offset=req.page.offset, resource_id=req.resource_id, name=req.name,
                            status=protectable_status(req.status), server_id=req.server_id)


def protectable_out(p: Protectable) -> protectable_pb2.Protectable:
    msg = protectable_pb2.Protectable(
        resource_id=p.resource_id, project_id=p.project_id, name=p.name,
        type=enum_value(common_pb2.ObjectType, p.type), resource_type=p.resource_type,
        status=STATUS_TO_PROTO.get(p.status, protectable_pb2.PROTECTABLE_STATUS_ERROR), size_bytes=p.size_bytes,
        server_id=p.server_id, path=p.path,
        disks=[protectable_pb2.ServerDisk(disk_id=d.disk_id, name=d.name, size_bytes=d.size_bytes, device=d.device)
               for d in p.disks])
    _set_time(msg.created_time, p.created_time)
    return msg


def list_tasks_in(project_id: str, req: task_pb2.ListTasksRequest) -> ListTasks:
    return ListTasks(
        project_id=project_id, limit=req.page.limit, offset=req.page.offset,
        operation_type=enum_name(task_pb2.OperationType, req.operation_type),
        status=enum_name(task_pb2.TaskStatus, req.status), vault_id=req.vault_id, resource_id=req.resource_id,
        start_time=req.start_time.ToDatetime(dt.timezone.utc) if req.HasField("start_time") else None,
        end_time=req.end_time.ToDatetime(dt.timezone.utc) if req.HasField("end_time") else None)


def task_out(task: Task) -> task_pb2.Task:
    msg = task_pb2.Task(
        task_id=task.task_id, project_id=task.project_id,
        operation_type=enum_value(task_pb2.OperationType, task.operation_type),
        status=enum_value(task_pb2.TaskStatus, task.status), progress=task.progress, bytes_done=task.bytes_done,
        bytes_total=task.bytes_total, vault_id=task.vault_id, vault_name=task.vault_name,
        resource_id=task.resource_id, resource_name=task.resource_name, backup_id=task.backup_id,
        checkpoint_id=task.checkpoint_id, policy_id=task.policy_id, extra_info=task.extra_info)
    if task.error_code or task.error_message:
        msg.error.code, msg.error.message = task.error_code, task.error_message
    for field, value in (("created_time", task.created_time), ("started_time", task.started_time),
                         ("ended_time", task.ended_time), ("updated_time", task.updated_time)):
        _set_time(getattr(msg, field), value)
    return msg


def _set_time(timestamp, value: dt.datetime | None) -> None:
    if value is not None:
        timestamp.FromDatetime(value)


# Checkpoints and backups

# CBR's fixed provider ids per resource type (protectables/providers in the CBR v3 API).
PROVIDER_IDS = {"disk": "d1603440-187d-4516-af25-121250c7cc97",
                "server": "0daac4c5-6707-4851-97ba-169e36266b66",
                "turbo": "f38d49e8-2ebb-4d6e-a4ff-d5c5a6e7c9c5"}


def backup_statuses(values) -> tuple[str, ...]:
    return tuple(enum_name(backup_pb2.BackupStatus, v) or "unknown" for v in values)


def backup_out(b: Backup) -> backup_pb2.Backup:
    msg = backup_pb2.Backup(
        backup_id=b.backup_id, project_id=b.project_id, name=b.name, description=b.description,
        checkpoint_id=b.checkpoint_id, vault_id=b.vault_id, parent_id=b.parent_id, resource_id=b.resource_id,
        resource_name=b.resource_name, resource_type=enum_value(common_pb2.ObjectType, b.resource_type),
        resource_size_bytes=b.resource_size_bytes, status=enum_value(backup_pb2.BackupStatus, b.status),
        image_type=enum_value(backup_pb2.ImageType, b.image_type), incremental=b.incremental,
        auto_trigger=b.auto_trigger, logical_bytes=b.logical_bytes, stored_bytes=b.stored_bytes,
        added_bytes=b.added_bytes, policy_id=b.policy_id, provider_id=PROVIDER_IDS.get(b.resource_type, ""),
        corrupt=b.corrupt, device=b.device,
        children=[backup_pb2.ChildBackup(
            backup_id=c.backup_id, resource_id=c.resource_id, resource_name=c.resource_name,
            resource_size_bytes=c.resource_size_bytes, status=enum_value(backup_pb2.BackupStatus, c.status),
            logical_bytes=c.logical_bytes, stored_bytes=c.stored_bytes, added_bytes=c.added_bytes)
            for c in b.children])
    if b.source_region:
        msg.replicated_from.CopyFrom(backup_pb2.ReplicaSource(
            source_region=b.source_region, source_project_id=b.source_project_id, source_vault_id=b.source_vault_id,
            source_backup_id=b.source_backup_id, replication_record_id=b.replication_record_id,
            manifest_digest=b.manifest_digest or b""))
    for field, value in (("created_time", b.created_time), ("updated_time", b.updated_time),
                         ("protected_time", b.protected_time), ("expired_time", b.expired_time),
                         ("verified_time", b.verified_time)):
        _set_time(getattr(msg, field), value)
    return msg


def checkpoint_out(cp: Checkpoint) -> backup_pb2.Checkpoint:
    protecting = any(b.status in ("waiting_protect", "protecting") for b in cp.backups)
    failed = cp.backups and all(b.status == "error" for b in cp.backups)
    status = "protecting" if protecting else "error" if failed else "available"
    msg = backup_pb2.Checkpoint(
        checkpoint_id=cp.checkpoint_id, project_id=cp.project_id, vault_id=cp.vault_id,
        status=enum_value(backup_pb2.CheckpointStatus, status), name=cp.name, description=cp.description,
        # As its backups say (they may turn full if the backup they were to compare with went meanwhile).
        incremental=any(b.incremental for b in cp.backups) if cp.backups else cp.incremental,
        auto_trigger=cp.auto_trigger, policy_id=cp.policy_id,
        resources=[backup_pb2.CheckpointResource(
            resource_id=b.resource_id, type=enum_value(common_pb2.ObjectType, b.resource_type),
            name=b.resource_name, backup_id=b.backup_id, task_id=b.task_id) for b in cp.backups],
        skipped_resources=[backup_pb2.SkippedResource(
            resource_id=s.resource_id, type=enum_value(common_pb2.ObjectType, s.type), name=s.name, code=s.code,
            reason=s.reason) for s in cp.skipped])
    _set_time(msg.created_time, cp.created_time)
    return msg


def backup_filter_in(project_id: str, req: backup_pb2.ListBackupsRequest) -> BackupFilter:
    return BackupFilter(
        project_id=project_id, vault_id=req.vault_id, resource_id=req.resource_id,
        resource_type=object_type(req.resource_type) if req.resource_type else "",
        statuses=check_statuses(backup_statuses(req.status)),
        image_type=enum_name(backup_pb2.ImageType, req.image_type),
        start_time=req.start_time.ToDatetime(dt.timezone.utc) if req.HasField("start_time") else None,
        end_time=req.end_time.ToDatetime(dt.timezone.utc) if req.HasField("end_time") else None,
        name=req.name, checkpoint_id=req.checkpoint_id, parent_id=req.parent_id, sort=parse_sort(req.sort))

"""Protobuf messages <-> backup domain objects and commands."""
from __future__ import annotations

import datetime as dt

from cbr.backup.v1 import protectable_pb2, task_pb2
from cbr.common.v1 import common_pb2
from cbr_backup.domain.model import Protectable, Task
from cbr_backup.service.commands import ListProtectables, ListTasks
from cbr_common.proto_enums import enum_name, enum_value

# The domain says "in-use" as CBR does; the enum says IN_USE.
STATUS_TO_PROTO = {"available": protectable_pb2.PROTECTABLE_STATUS_AVAILABLE,
                   "in-use": protectable_pb2.PROTECTABLE_STATUS_IN_USE,
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

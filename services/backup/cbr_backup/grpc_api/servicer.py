"""ProtectableService, TaskService and BackupService over gRPC: convert, call the use case, convert back.

Errors leave through cbr_common's table.
"""
from __future__ import annotations

from typing import Callable

from cbr.backup.v1 import backup_pb2, backup_pb2_grpc, protectable_pb2, protectable_pb2_grpc, task_pb2, task_pb2_grpc
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import VaultDirectory
from cbr_backup.grpc_api import convert
from cbr_backup.providers.base import Provider
from cbr_backup.grpc_api import read_convert
from cbr_backup.service import backup_reads, backups, checkpoints, protectables, tasks
from cbr_common.auth import ROLE_SERVICE, current_principal
from cbr_common.errors import PermissionDeniedError


def _project() -> str:
    return current_principal().project_id


class ProtectableServicer(protectable_pb2_grpc.ProtectableServiceServicer):
    def __init__(self, make_uow: Callable[[], BackupUnitOfWork], provider: Provider, vaults: VaultDirectory):
        self._uow = make_uow
        self._provider = provider
        self._vaults = vaults

    async def ListProtectables(self, request, context):
        found, count = await protectables.list_protectables(convert.list_protectables_in(_project(), request),
                                                            self._uow(), self._provider)
        return protectable_pb2.ListProtectablesResponse(protectables=[convert.protectable_out(p) for p in found],
                                                        count=count)

    async def GetProtectable(self, request, context):
        found = await protectables.get_protectable(_project(), convert.object_type(request.type),
                                                   request.resource_id, self._uow(), self._provider)
        return protectable_pb2.GetProtectableResponse(protectable=convert.protectable_out(found))

    async def CreateDisk(self, request, context):
        disk = await protectables.create_disk(_project(), request.name, request.size_bytes, self._uow,
                                              self._provider)
        return protectable_pb2.CreateDiskResponse(disk=convert.protectable_out(disk))

    async def ResizeDisk(self, request, context):
        disk = await protectables.resize_disk(_project(), request.disk_id, request.new_size_bytes, self._uow,
                                              self._provider)
        return protectable_pb2.ResizeDiskResponse(disk=convert.protectable_out(disk))

    async def DeleteDisk(self, request, context):
        await protectables.delete_disk(_project(), request.disk_id, self._uow(), self._provider, self._vaults)
        return protectable_pb2.DeleteDiskResponse()

    async def DefineServer(self, request, context):
        server = await protectables.define_server(_project(), request.name, list(request.disk_ids), self._uow())
        return protectable_pb2.DefineServerResponse(server=convert.protectable_out(server))

    async def DeleteServer(self, request, context):
        await protectables.delete_server(_project(), request.server_id, self._uow(), self._vaults)
        return protectable_pb2.DeleteServerResponse()

    async def DefineFileSystem(self, request, context):
        fs = await protectables.define_file_system(_project(), request.name, self._uow, self._provider)
        return protectable_pb2.DefineFileSystemResponse(file_system=convert.protectable_out(fs))

    async def DeleteFileSystem(self, request, context):
        await protectables.delete_file_system(_project(), request.file_system_id, self._uow(), self._provider,
                                              self._vaults)
        return protectable_pb2.DeleteFileSystemResponse()


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, make_uow: Callable[[], BackupUnitOfWork], watch_poll_seconds: float = tasks.WATCH_POLL_SECONDS):
        self._uow = make_uow
        self._poll = watch_poll_seconds

    async def ListTasks(self, request, context):
        found, count = await tasks.list_tasks(convert.list_tasks_in(_project(), request), self._uow())
        return task_pb2.ListTasksResponse(tasks=[convert.task_out(t) for t in found], count=count)

    async def GetTask(self, request, context):
        task = await tasks.get_task(_project(), request.task_id, self._uow())
        return task_pb2.GetTaskResponse(task=convert.task_out(task))

    async def WatchTask(self, request, context):
        async for task in tasks.watch_task(_project(), request.task_id, self._uow, self._poll):
            yield task_pb2.WatchTaskResponse(task=convert.task_out(task))

    async def CancelTask(self, request, context):
        task = await tasks.cancel_task(_project(), request.task_id, self._uow())
        return task_pb2.CancelTaskResponse(task=convert.task_out(task))


class BackupServicer(backup_pb2_grpc.BackupServiceServicer):
    def __init__(self, make_uow: Callable[[], BackupUnitOfWork], vaults: VaultDirectory, provider: Provider,
                 reader: backup_reads.BackupReader | None = None):
        self._uow = make_uow
        self._vaults = vaults
        self._provider = provider
        self._reader = reader  # the read calls' store, KEK and index connections (None: they are unavailable)

    async def CreateCheckpoint(self, request, context):
        if (request.auto_trigger or request.policy_id or request.retention_duration_days) \
                and ROLE_SERVICE not in current_principal().roles:
            raise PermissionDeniedError("auto_trigger, policy_id and retention_duration_days are the policy "
                                        "service's to set")
        excludes = {d.resource_id: tuple(d.exclude_volumes) for d in request.resource_details}
        ids = tuple(request.resource_ids) or tuple(d.resource_id for d in request.resource_details)
        cmd = checkpoints.CreateCheckpoint(
            project_id=_project(), vault_id=request.vault_id, resource_ids=ids, excludes=excludes,
            incremental=request.incremental if request.HasField("incremental") else True, name=request.name,
            description=request.description, auto_trigger=request.auto_trigger, policy_id=request.policy_id,
            retention_duration_days=request.retention_duration_days, request_id=request.request_id)
        cp = await checkpoints.create_checkpoint(cmd, self._uow, self._vaults)
        return backup_pb2.CreateCheckpointResponse(checkpoint=convert.checkpoint_out(cp))

    async def GetCheckpoint(self, request, context):
        cp = await checkpoints.get_checkpoint(_project(), request.checkpoint_id, self._uow())
        return backup_pb2.GetCheckpointResponse(checkpoint=convert.checkpoint_out(cp))

    async def ListBackups(self, request, context):
        found, count = await backups.list_backups(convert.backup_filter_in(_project(), request), request.page.limit,
                                                  request.page.offset, self._uow())
        return backup_pb2.ListBackupsResponse(backups=[convert.backup_out(b) for b in found], count=count)

    async def GetBackup(self, request, context):
        backup = await backups.get_backup(_project(), request.backup_id, self._uow())
        return backup_pb2.GetBackupResponse(backup=convert.backup_out(backup))

    async def UpdateBackup(self, request, context):
        backup = await backups.update_backup(
            _project(), request.backup_id, request.name if request.HasField("name") else None,
            request.description if request.HasField("description") else None, self._uow())
        return backup_pb2.UpdateBackupResponse(backup=convert.backup_out(backup))

    async def DeleteBackup(self, request, context):
        task_id = await backups.delete_backup(_project(), request.backup_id, self._uow, self._vaults)
        return backup_pb2.DeleteBackupResponse(task_id=task_id)

    async def RestoreBackup(self, request, context):
        req = backups.RestoreRequest(
            project_id=_project(), backup_id=request.backup_id, volume_id=request.volume_id,
            server_id=request.server_id,
            mappings=tuple(backups.Mapping(m.backup_id, m.volume_id) for m in request.mappings),
            file_system_id=request.file_system_id, target_path=request.target_path,
            new_directory=request.new_directory, force=request.force, paths=tuple(request.paths))
        return backup_pb2.RestoreBackupResponse(task_id=await backups.restore_backup(req, self._uow,
                                                                                    self._provider, self._reader))

    async def CreateDiskFromBackup(self, request, context):
        disk_id, task_id = await backups.create_disk_from_backup(
            _project(), request.backup_id, request.name, request.size_bytes, self._uow, self._provider)
        return backup_pb2.CreateDiskFromBackupResponse(disk_id=disk_id, task_id=task_id)

    async def VerifyBackups(self, request, context):
        task_id = await backups.verify_backups(_project(), request.vault_id, list(request.backup_ids), self._uow,
                                               self._vaults)
        return backup_pb2.VerifyBackupsResponse(task_id=task_id)

    async def CollectGarbage(self, request, context):
        grace = request.grace_seconds if request.HasField("grace_seconds") else None
        task_id = await backups.collect_garbage(_project(), request.vault_id, grace, self._uow, self._vaults)
        return backup_pb2.CollectGarbageResponse(task_id=task_id)

    # Reads out of a backup (DESIGN.md 18)

    async def GetBackupImageRange(self, request, context):
        read = await backup_reads.read_image(_project(), request.backup_id, request.offset, request.length,
                                             request.holes, self._uow, self._need_reader())
        async for message in read_convert.data_out(read):
            yield message

    async def GetBackupFile(self, request, context):
        read = await backup_reads.read_file(_project(), request.backup_id, request.path, request.offset,
                                            request.length, request.holes, self._uow, self._need_reader())
        async for message in read_convert.data_out(read):
            yield message

    async def ListBackupTree(self, request, context):
        view, entries = await backup_reads.list_tree(_project(), request.backup_id, request.path, self._uow,
                                                     self._need_reader())
        for start in range(0, max(1, len(entries)), backup_reads.LISTING_BATCH):
            yield backup_pb2.ListBackupTreeResponse(
                entries=[read_convert.node_out(view, e) for e in entries[start:start + backup_reads.LISTING_BATCH]])

    def _need_reader(self) -> backup_reads.BackupReader:
        if self._reader is None:
            raise NotImplementedError("this backup service was started without a chunk store to read from")
        return self._reader

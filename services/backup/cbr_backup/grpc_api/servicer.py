"""ProtectableService and TaskService over gRPC: convert, call the use case, convert back.

Errors leave through cbr_common's table.
"""
from __future__ import annotations

from typing import Callable

from cbr.backup.v1 import protectable_pb2, protectable_pb2_grpc, task_pb2, task_pb2_grpc
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.grpc_api import convert
from cbr_backup.providers.base import Provider
from cbr_backup.service import protectables, tasks
from cbr_common.auth import current_principal


def _project() -> str:
    return current_principal().project_id


class ProtectableServicer(protectable_pb2_grpc.ProtectableServiceServicer):
    def __init__(self, make_uow: Callable[[], BackupUnitOfWork], provider: Provider):
        self._uow = make_uow
        self._provider = provider

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
        await protectables.delete_disk(_project(), request.disk_id, self._uow(), self._provider)
        return protectable_pb2.DeleteDiskResponse()

    async def DefineServer(self, request, context):
        server = await protectables.define_server(_project(), request.name, list(request.disk_ids), self._uow())
        return protectable_pb2.DefineServerResponse(server=convert.protectable_out(server))

    async def DeleteServer(self, request, context):
        await protectables.delete_server(_project(), request.server_id, self._uow())
        return protectable_pb2.DeleteServerResponse()

    async def DefineFileSystem(self, request, context):
        fs = await protectables.define_file_system(_project(), request.name, self._uow, self._provider)
        return protectable_pb2.DefineFileSystemResponse(file_system=convert.protectable_out(fs))

    async def DeleteFileSystem(self, request, context):
        await protectables.delete_file_system(_project(), request.file_system_id, self._uow(), self._provider)
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

"""Wires the backup service from one Settings: provider, database, events and the gRPC servicers."""
from __future__ import annotations

from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
from cbr_backup.adapters.tables import metadata
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.grpc_api.servicer import ProtectableServicer, TaskServicer
from cbr_backup.providers.base import Provider
from cbr_backup.providers.local import LocalProvider
from cbr_backup.service.events import SUBSCRIPTIONS
from cbr_common.jetstream import EventConsumer
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings, SettingsError

PROTECTABLE_SERVICE = "cbr.backup.v1.ProtectableService"
TASK_SERVICE = "cbr.backup.v1.TaskService"
BACKUP_SERVICE = "cbr.backup.v1.BackupService"


def local_provider(settings: Settings) -> LocalProvider:
    """The embedded provider; its folders are created if missing, and must be named."""
    for value, name in ((settings.pool_dir, "CBR_POOL_DIR"), (settings.fs_root, "CBR_FS_ROOT")):
        if not value.strip():
            raise SettingsError(f"missing required setting {name} (the local provider's folder)")
    provider = LocalProvider(settings.pool_dir, settings.fs_root)
    provider.prepare()
    return provider


async def start(settings: Settings, provider: Provider | None = None) -> ServiceRuntime:
    if provider is None:
        provider = local_provider(settings)  # before connecting, so a bad setting fails fast
    runtime = await open_runtime(settings, metadata)

    def make_uow() -> BackupUnitOfWork:
        return BackupUnitOfWork(runtime.db)

    consumer = EventConsumer(runtime.js, "backup", SUBSCRIPTIONS, make_uow, metadata)
    runtime.spawn(consumer.run(), "backup-events")
    return await serve(runtime, [
        ServiceBinding(protectable_pb2_grpc.add_ProtectableServiceServicer_to_server,
                       ProtectableServicer(make_uow, provider), PROTECTABLE_SERVICE),
        ServiceBinding(task_pb2_grpc.add_TaskServiceServicer_to_server, TaskServicer(make_uow), TASK_SERVICE),
        # Backups are not built yet: the generated base answers every BackupService call UNIMPLEMENTED.
        ServiceBinding(backup_pb2_grpc.add_BackupServiceServicer_to_server,
                       backup_pb2_grpc.BackupServiceServicer(), BACKUP_SERVICE),
    ])

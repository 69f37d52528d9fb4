"""Wires the backup service from one Settings: provider, database, events and the gRPC servicers."""
from __future__ import annotations

from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
from cbr.replication.v1 import replication_pb2_grpc
from cbr_backup.adapters.chunk_index import ChunkIndex
from cbr_backup.adapters.metric_samples import job_sampler
from cbr_backup.adapters.tables import metadata
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import GrpcVaultDirectory
from cbr_backup.grpc_api.servicer import BackupServicer, ProtectableServicer, TaskServicer
from cbr_backup.providers.base import Provider
from cbr_backup.providers.local import LocalProvider
from cbr_backup.keys import KeyProvider, key_provider
from cbr_backup.service.backup_reads import BackupReader
from cbr_backup.service.events import subscriptions
from cbr_backup.service.jobs import JOBS_STREAM
from cbr_backup.service.vault_keys import wrap_clear_keys
from cbr_backup.transfer.receiver import TransferReceiver
from cbr_backup.transfer.servicer import RegionTransferServicer
from cbr_common.regions import load_regions
from cbr_common.jetstream import EventConsumer, ensure_stream
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding, start_transfer_listener
from cbr_common.settings import Settings, SettingsError

PROTECTABLE_SERVICE = "cbr.backup.v1.ProtectableService"
TASK_SERVICE = "cbr.backup.v1.TaskService"
BACKUP_SERVICE = "cbr.backup.v1.BackupService"
TRANSFER_SERVICE = "cbr.replication.v1.RegionTransferService"


def local_provider(settings: Settings) -> LocalProvider:
    """The embedded provider; its folders are created if missing, and must be named."""
    for value, name in ((settings.pool_dir, "CBR_POOL_DIR"), (settings.fs_root, "CBR_FS_ROOT")):
        if not value.strip():
            raise SettingsError(f"missing required setting {name} (the local provider's folder)")
    provider = LocalProvider(settings.pool_dir, settings.fs_root)
    provider.prepare()
    return provider


def provider_for(settings: Settings) -> Provider:
    """The provider CBR_PROVIDER names: local, or ceph (disks as RBD images of CBR_CEPH_CONF's cluster; file
    systems stay with the local provider, whose folders must then be named too)."""
    if settings.provider != "ceph":
        return local_provider(settings)
    if not settings.ceph_conf.strip():
        raise SettingsError("missing required setting CBR_CEPH_CONF (the ceph provider's cluster)")
    from cbr_backup.providers.rbd import RbdProvider  # librbd loads only where it is used
    from cbr_backup.providers.rbd_images import RbdImages

    images = RbdImages(settings.ceph_conf, pool=settings.rbd_pool, namespace=settings.rbd_namespace,
                       client_name=settings.ceph_client or None, keyring=settings.ceph_keyring or None)
    return RbdProvider(images, file_systems=local_provider(settings))


async def start(settings: Settings, provider: Provider | None = None) -> ServiceRuntime:
    if provider is None:
        provider = provider_for(settings)  # before connecting, so a bad setting fails fast
    keys = key_provider(settings)
    directory = load_regions(settings.regions_file, settings.region)  # the peers whose replicas it takes
    runtime = await open_runtime(settings, metadata)

    def make_uow() -> BackupUnitOfWork:
        return BackupUnitOfWork(runtime.db)

    await _wrap_clear_keys(make_uow, keys)

    await ensure_stream(runtime.js, JOBS_STREAM, settings.nats_replicas)  # before the outbox relay sends the first job
    vaults = GrpcVaultDirectory(settings)
    runtime.closers.append(vaults.close)
    consumer = EventConsumer(runtime.js, "backup", subscriptions(keys, provider), make_uow, metadata)
    runtime.spawn(consumer.run(), "backup-events")
    runtime.samplers.append(job_sampler(runtime.db))
    receiver = TransferReceiver(make_uow, vaults, keys, store=lambda: _chunk_store(settings),
                                open_index=lambda: ChunkIndex(settings.database_url))
    # The destination side of replication (DESIGN.md 17.2): this service alone writes a replica's chunks. Served on
    # a listener of its own where CBR_TRANSFER_LISTEN_ADDR names one, else beside the project APIs.
    transfer = ServiceBinding(replication_pb2_grpc.add_RegionTransferServiceServicer_to_server,
                              RegionTransferServicer(receiver, directory), TRANSFER_SERVICE)
    # Reads out of backups (DESIGN.md 18) decode chunks here, as the transfer receiver writes them here.
    reader = BackupReader(keys, lambda: _chunk_store(settings), lambda: ChunkIndex(settings.database_url))
    runtime.closers.append(reader.close)
    runtime = await serve(runtime, [
        ServiceBinding(protectable_pb2_grpc.add_ProtectableServiceServicer_to_server,
                       ProtectableServicer(make_uow, provider, vaults), PROTECTABLE_SERVICE),
        ServiceBinding(task_pb2_grpc.add_TaskServiceServicer_to_server, TaskServicer(make_uow), TASK_SERVICE),
        ServiceBinding(backup_pb2_grpc.add_BackupServiceServicer_to_server,
                       BackupServicer(make_uow, vaults, provider, reader), BACKUP_SERVICE),
        *(() if settings.transfer_listen_addr else (transfer,)),
    ])
    listener = await start_transfer_listener(settings, transfer)
    if listener is not None:
        runtime.closers.append(lambda: listener.stop(1.0))
    return runtime


def _chunk_store(settings: Settings):
    from cbr_backup.worker.main import chunk_store  # the workers' store (imports this module: not at the top)
    return chunk_store(settings)


async def _wrap_clear_keys(make_uow, keys: KeyProvider) -> None:
    """Vaults from before keys were wrapped keep no clear key past the service's start."""
    async with make_uow() as uow:
        if await wrap_clear_keys(uow, keys):
            await uow.commit()

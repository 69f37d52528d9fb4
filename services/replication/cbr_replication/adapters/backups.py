"""What the replication service asks of this region's backup service, on behalf of the caller's project: one
backup, and a vault's backups that could be replicated."""
from __future__ import annotations

import datetime as dt
from typing import Protocol

import grpc

from cbr.backup.v1 import backup_pb2, backup_pb2_grpc
from cbr.common.v1 import common_pb2
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.proto_enums import enum_name
from cbr_common.settings import Settings
from cbr_replication.domain.model import SourceBackup

PAGE = 1000


class BackupPort(Protocol):
    async def get_backup(self, project_id: str, backup_id: str) -> SourceBackup | None: ...
    async def replicable_backups(self, project_id: str, vault_id: str) -> list[SourceBackup]: ...


def source_backup(b: backup_pb2.Backup) -> SourceBackup:
    return SourceBackup(
        backup_id=b.backup_id, project_id=b.project_id, vault_id=b.vault_id, name=b.name, description=b.description,
        status=enum_name(backup_pb2.BackupStatus, b.status), image_type=enum_name(backup_pb2.ImageType, b.image_type),
        corrupt=b.corrupt, parent_id=b.parent_id, resource_id=b.resource_id,
        resource_type=enum_name(common_pb2.ObjectType, b.resource_type), resource_size_bytes=b.resource_size_bytes,
        created_time=b.created_time.ToDatetime(dt.timezone.utc) if b.HasField("created_time") else None)


class GrpcBackups:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._channel = open_channel(settings, settings.peer("backup"))
        self._stub = backup_pb2_grpc.BackupServiceStub(self._channel)

    async def _call(self, method, request, project_id: str):
        try:
            return await method(request, metadata=service_metadata(self._settings, project_id),
                                timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            raise_if_unavailable(error, "backup")
            raise

    async def get_backup(self, project_id: str, backup_id: str) -> SourceBackup | None:
        try:
            reply = await self._call(self._stub.GetBackup, backup_pb2.GetBackupRequest(backup_id=backup_id),
                                     project_id)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return source_backup(reply.backup)

    async def replicable_backups(self, project_id: str, vault_id: str) -> list[SourceBackup]:
        """The vault's available top-level backups taken here (not replicas), oldest first; a backup made while
        paging shifts the pages, so one seen twice counts once."""
        found: dict[str, SourceBackup] = {}
        offset = 0
        while True:
            reply = await self._call(self._stub.ListBackups, backup_pb2.ListBackupsRequest(
                vault_id=vault_id, status=[backup_pb2.BACKUP_STATUS_AVAILABLE],
                image_type=backup_pb2.IMAGE_TYPE_BACKUP, page={"limit": PAGE, "offset": offset},
                sort="created_time:asc"), project_id)
            for b in reply.backups:
                found.setdefault(b.backup_id, source_backup(b))
            offset += len(reply.backups)
            if not reply.backups or offset >= reply.count:
                return list(found.values())

    async def close(self) -> None:
        await self._channel.close()

"""What the scheduler and retention ask of the other services, on behalf of a policy's project: the backup
service (checkpoints, backups, deletes) and the vault service (is the vault locked)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import grpc

from cbr.backup.v1 import backup_pb2, backup_pb2_grpc
from cbr.vault.v1 import vault_pb2, vault_pb2_grpc
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.proto_enums import enum_name
from cbr_common.settings import Settings
from cbr_policy.domain.retention import BackupView

PAGE = 1000


class PeerError(RuntimeError):
    """The peer refused the request; the message says why (kept on the tick or in the log)."""


@dataclass(frozen=True)
class CheckpointRequest:
    project_id: str
    vault_id: str
    policy_id: str
    request_id: str            # the tick id: a retried tick never backs up twice
    incremental: bool = True
    retention_duration_days: int = 0


@dataclass(frozen=True)
class CheckpointMade:
    checkpoint_id: str
    backed_up: int                 # resources the checkpoint is backing up
    skipped: tuple[str, ...] = ()  # why the others were skipped ("<code>: <reason>")


class BackupPort(Protocol):
    async def create_checkpoint(self, req: CheckpointRequest) -> CheckpointMade: ...
    async def checkpoint_running(self, project_id: str, checkpoint_id: str) -> bool: ...
    async def vault_backups(self, project_id: str, vault_id: str) -> list[BackupView]: ...
    async def delete_backup(self, project_id: str, backup_id: str) -> None: ...
    async def vault_locked(self, project_id: str, vault_id: str) -> bool | None: ...


class GrpcBackups:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._backup_channel = open_channel(settings, settings.peer("backup"))
        self._vault_channel = open_channel(settings, settings.peer("vault"))
        self._backups = backup_pb2_grpc.BackupServiceStub(self._backup_channel)
        self._vaults = vault_pb2_grpc.VaultServiceStub(self._vault_channel)

    async def _call(self, method, request, project_id: str, peer: str):
        try:
            return await method(request, metadata=service_metadata(self._settings, project_id),
                                timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            raise_if_unavailable(error, peer)
            raise PeerError(f"{peer} service answered {error.code().name}: {error.details()}") from error

    async def create_checkpoint(self, req: CheckpointRequest) -> CheckpointMade:
        reply = await self._call(self._backups.CreateCheckpoint, backup_pb2.CreateCheckpointRequest(
            vault_id=req.vault_id, auto_trigger=True, policy_id=req.policy_id, request_id=req.request_id,
            incremental=req.incremental, retention_duration_days=max(0, req.retention_duration_days)),
            req.project_id, "backup")
        cp = reply.checkpoint
        return CheckpointMade(cp.checkpoint_id, len(cp.resources),
                              tuple(f"{s.code}: {s.reason}" for s in cp.skipped_resources))

    async def checkpoint_running(self, project_id: str, checkpoint_id: str) -> bool:
        reply = await self._call(self._backups.GetCheckpoint, backup_pb2.GetCheckpointRequest(
            checkpoint_id=checkpoint_id), project_id, "backup")
        return reply.checkpoint.status == backup_pb2.CHECKPOINT_STATUS_PROTECTING

    async def vault_backups(self, project_id: str, vault_id: str) -> list[BackupView]:
        """Every backup of the vault, newest first; a backup taken while paging shifts the pages, so one seen
        twice counts once."""
        found, seen, offset = [], set(), 0
        while True:
            reply = await self._call(self._backups.ListBackups, backup_pb2.ListBackupsRequest(
                vault_id=vault_id, page={"limit": PAGE, "offset": offset}, sort="created_time:desc"),
                project_id, "backup")
            found += [BackupView(backup_id=b.backup_id, created_time=b.created_time.ToDatetime(dt.timezone.utc),
                                 auto_trigger=b.auto_trigger, status=enum_name(backup_pb2.BackupStatus, b.status),
                                 expired_time=b.expired_time.ToDatetime(dt.timezone.utc)
                                 if b.HasField("expired_time") else None, policy_id=b.policy_id)
                      for b in reply.backups if b.backup_id not in seen]
            seen.update(b.backup_id for b in reply.backups)
            offset += len(reply.backups)
            if not reply.backups or offset >= reply.count:
                return found

    async def delete_backup(self, project_id: str, backup_id: str) -> None:
        await self._call(self._backups.DeleteBackup, backup_pb2.DeleteBackupRequest(backup_id=backup_id),
                         project_id, "backup")

    async def vault_locked(self, project_id: str, vault_id: str) -> bool | None:
        """None when the vault is gone."""
        try:
            reply = await self._call(self._vaults.GetVault, vault_pb2.GetVaultRequest(vault_id=vault_id),
                                     project_id, "vault")
        except PeerError as exc:
            if isinstance(exc.__cause__, grpc.aio.AioRpcError) and exc.__cause__.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return reply.vault.locked

    async def close(self) -> None:
        await self._backup_channel.close()
        await self._vault_channel.close()

"""Asks the vault service for a vault (its type, capacity, lock and resources) on behalf of a project."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from cbr.common.v1 import common_pb2
from cbr.vault.v1 import vault_pb2, vault_pb2_grpc
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.proto_enums import enum_name
from cbr_common.settings import Settings


@dataclass(frozen=True)
class VaultResource:
    resource_id: str
    type: str
    name: str
    exclude_volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VaultInfo:
    vault_id: str
    project_id: str
    name: str
    object_type: str     # disk | server | turbo
    protect_type: str    # backup | replication
    status: str          # available | lock | frozen | deleting | error
    size_gb: int
    auto_expand: bool
    locked: bool
    resources: tuple[VaultResource, ...] = ()
    encrypted: bool = True  # its data keys: a vault is unencrypted only if created asking for it

    def resource(self, resource_id: str) -> VaultResource | None:
        return next((r for r in self.resources if r.resource_id == resource_id), None)


class VaultDirectory(Protocol):
    async def get(self, project_id: str, vault_id: str) -> VaultInfo | None: ...

    async def vault_holding(self, project_id: str, resource_id: str) -> str | None:
        """The id of the vault that protects the resource, if one does."""


class GrpcVaultDirectory:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._channel = open_channel(settings, settings.peer("vault"))
        self._stub = vault_pb2_grpc.VaultServiceStub(self._channel)

    async def get(self, project_id: str, vault_id: str) -> VaultInfo | None:
        try:
            reply = await self._stub.GetVault(vault_pb2.GetVaultRequest(vault_id=vault_id),
                                              metadata=service_metadata(self._settings, project_id),
                                              timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise_if_unavailable(error, "vault")
            raise RuntimeError(f"vault lookup failed: {error.code().name}") from error
        v = reply.vault
        return VaultInfo(
            vault_id=v.vault_id, project_id=v.project_id, name=v.name,
            object_type=enum_name(common_pb2.ObjectType, v.object_type),
            protect_type=enum_name(vault_pb2.ProtectType, v.protect_type),
            status=enum_name(vault_pb2.VaultStatus, v.status), size_gb=v.size_gb, auto_expand=v.auto_expand,
            locked=v.locked, encrypted=v.encrypted,
            resources=tuple(VaultResource(r.resource_id, enum_name(common_pb2.ObjectType, r.type), r.name,
                                          tuple(r.exclude_volumes)) for r in v.resources))

    async def vault_holding(self, project_id: str, resource_id: str) -> str | None:
        try:
            reply = await self._stub.ListVaults(
                vault_pb2.ListVaultsRequest(resource_ids=[resource_id], page=common_pb2.PageRequest(limit=1)),
                metadata=service_metadata(self._settings, project_id), timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            raise_if_unavailable(error, "vault")
            raise RuntimeError(f"vault lookup failed: {error.code().name}") from error
        return reply.vaults[0].vault_id if reply.vaults else None

    async def close(self) -> None:
        await self._channel.close()

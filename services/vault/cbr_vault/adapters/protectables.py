"""Asks the backup service's ProtectableService whether a resource exists in the caller's project."""
from __future__ import annotations

from typing import Protocol

import grpc

from cbr.backup.v1 import protectable_pb2, protectable_pb2_grpc
from cbr.common.v1 import common_pb2
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.settings import Settings
from cbr_vault.domain.model import ProtectableInfo

TYPE_TO_PROTO = {"server": common_pb2.OBJECT_TYPE_SERVER, "disk": common_pb2.OBJECT_TYPE_DISK,
                 "turbo": common_pb2.OBJECT_TYPE_TURBO}


class ProtectableDirectory(Protocol):
    async def get(self, project_id: str, resource_type: str, resource_id: str) -> ProtectableInfo | None: ...


class GrpcProtectableDirectory:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._channel = open_channel(settings, settings.peer("backup"))
        self._stub = protectable_pb2_grpc.ProtectableServiceStub(self._channel)

    async def get(self, project_id: str, resource_type: str, resource_id: str) -> ProtectableInfo | None:
        try:
            reply = await self._stub.GetProtectable(
                protectable_pb2.GetProtectableRequest(type=TYPE_TO_PROTO[resource_type], resource_id=resource_id),
                metadata=service_metadata(self._settings, project_id),
                timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise_if_unavailable(error, "backup")
            raise RuntimeError(f"protectable lookup failed: {error.code().name}") from error
        p = reply.protectable
        return ProtectableInfo(resource_id=p.resource_id, type=resource_type, name=p.name,
                               size_bytes=p.size_bytes, disk_ids=tuple(d.disk_id for d in p.disks))

    async def close(self) -> None:
        await self._channel.close()

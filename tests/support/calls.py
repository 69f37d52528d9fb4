"""Small request builders and assertions shared by the integration tests."""
from __future__ import annotations

import grpc

from cbr.backup.v1 import protectable_pb2 as pp
from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common.grpc_errors import cbr_code_of

DISK, SERVER, TURBO = cp.OBJECT_TYPE_DISK, cp.OBJECT_TYPE_SERVER, cp.OBJECT_TYPE_TURBO
BACKUP, REPLICATION = vp.PROTECT_TYPE_BACKUP, vp.PROTECT_TYPE_REPLICATION
MIB = 1024 * 1024


async def expect_error(awaitable, code: grpc.StatusCode, cbr_code: str | None = None) -> grpc.aio.AioRpcError:
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
        if cbr_code is not None:
            assert cbr_code_of(error) == cbr_code, f"expected {cbr_code}, got {cbr_code_of(error)}"
        return error
    raise AssertionError(f"expected {code.name}, the call succeeded")


async def create_vault(caller, name: str = "vault-1", object_type=DISK, protect_type=BACKUP, size_gb: int = 100,
                       **fields) -> vp.Vault:
    reply = await caller.vault.CreateVault(vp.CreateVaultRequest(
        name=name, object_type=object_type, protect_type=protect_type, size_gb=size_gb, **fields))
    return reply.vault


async def create_disk(caller, name: str = "disk-1", size_bytes: int = 8 * MIB) -> pp.Protectable:
    return (await caller.protectables.CreateDisk(pp.CreateDiskRequest(name=name, size_bytes=size_bytes))).disk


async def create_server(caller, name: str = "server-1", disks: int = 2) -> pp.Protectable:
    ids = [(await create_disk(caller, f"{name}-disk{i}")).resource_id for i in range(disks)]
    return (await caller.protectables.DefineServer(pp.DefineServerRequest(name=name, disk_ids=ids))).server


def ref(resource: pp.Protectable, **fields) -> vp.ResourceRef:
    return vp.ResourceRef(resource_id=resource.resource_id, type=resource.type, **fields)


async def vault_count(caller) -> int:
    return (await caller.vault.ListVaults(vp.ListVaultsRequest())).count

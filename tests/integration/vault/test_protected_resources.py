"""A disk, server or file system that a vault protects is not deleted from under it: the backup service refuses
the delete (FAILED_PRECONDITION, BackupService.6735) until the resource leaves the vault, and an add racing a
delete never leaves a vault holding a resource that is gone."""
from __future__ import annotations

import asyncio

import grpc

from cbr.backup.v1 import protectable_pb2 as pp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import (BACKUP, DISK, SERVER, TURBO, create_disk, create_server, create_vault,
                                 expect_error, ref)

PROTECTED = "BackupService.6735"
FAILED, NOT_FOUND = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND


async def held_ids(caller, vault_id: str) -> list[str]:
    vault = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault_id))).vault
    return [r.resource_id for r in vault.resources]


async def exists(caller, object_type, resource_id: str) -> bool:
    try:
        await caller.protectables.GetProtectable(pp.GetProtectableRequest(type=object_type, resource_id=resource_id))
    except grpc.aio.AioRpcError as error:
        assert error.code() == NOT_FOUND
        return False
    return True


async def test_a_protected_disk_is_deleted_only_after_it_leaves_the_vault(caller):
    disk = await create_disk(caller, "kept")
    vault = await create_vault(caller, "guard", DISK, BACKUP, resources=[ref(disk)])
    error = await expect_error(caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id)),
                               FAILED, PROTECTED)
    assert vault.vault_id in error.details()
    assert await exists(caller, DISK, disk.resource_id)
    assert await held_ids(caller, vault.vault_id) == [disk.resource_id]

    await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id,
                                                                 resource_ids=[disk.resource_id]))
    await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id))
    assert not await exists(caller, DISK, disk.resource_id)


async def test_a_protected_server_is_deleted_only_after_it_leaves_the_vault(caller):
    server = await create_server(caller, "web", disks=1)
    vault = await create_vault(caller, "guard", SERVER, BACKUP, resources=[ref(server)])
    await expect_error(caller.protectables.DeleteServer(pp.DeleteServerRequest(server_id=server.resource_id)),
                       FAILED, PROTECTED)
    assert await exists(caller, SERVER, server.resource_id)
    assert await held_ids(caller, vault.vault_id) == [server.resource_id]

    # Another project's vault holding nothing of this project changes nothing; moving it to another vault
    # keeps it protected.
    other = await create_vault(caller, "other", SERVER, BACKUP)
    await caller.vault.MigrateResources(vp.MigrateResourcesRequest(
        vault_id=vault.vault_id, destination_vault_id=other.vault_id, resource_ids=[server.resource_id]))
    error = await expect_error(caller.protectables.DeleteServer(pp.DeleteServerRequest(
        server_id=server.resource_id)), FAILED, PROTECTED)
    assert other.vault_id in error.details()

    await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=other.vault_id,
                                                                 resource_ids=[server.resource_id]))
    await caller.protectables.DeleteServer(pp.DeleteServerRequest(server_id=server.resource_id))
    assert not await exists(caller, SERVER, server.resource_id)


async def test_a_protected_file_system_is_deleted_only_after_it_leaves_the_vault(caller):
    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="share"))).file_system
    vault = await create_vault(caller, "guard", TURBO, BACKUP, resources=[ref(fs)])
    await expect_error(caller.protectables.DeleteFileSystem(pp.DeleteFileSystemRequest(
        file_system_id=fs.resource_id)), FAILED, PROTECTED)
    assert await exists(caller, TURBO, fs.resource_id)
    await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id,
                                                                 resource_ids=[fs.resource_id]))
    await caller.protectables.DeleteFileSystem(pp.DeleteFileSystemRequest(file_system_id=fs.resource_id))
    assert not await exists(caller, TURBO, fs.resource_id)


async def test_an_unprotected_disk_is_deleted_as_before(caller):
    disk = await create_disk(caller, "free")
    await create_vault(caller, "empty", DISK, BACKUP)
    await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id))
    assert not await exists(caller, DISK, disk.resource_id)


async def test_an_add_racing_a_delete_never_leaves_a_vault_holding_a_deleted_disk(caller):
    """Each round sends AddResources and DeleteDisk at once. Whatever order they land in, afterwards either the
    disk exists (the delete was refused, or lost the race and found it protected) or no vault holds it."""
    vault = await create_vault(caller, "race", DISK, BACKUP)
    outcomes = set()

    async def delete_after(disk_id: str, delay: float):
        await asyncio.sleep(delay)
        return await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk_id))

    for step in range(16):  # the delete sent 0 to 30 ms after the add, to land at each point of it
        disk = await create_disk(caller, "contested")
        add = caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[ref(disk)]))
        delete = delete_after(disk.resource_id, step * 0.002)
        added, deleted = await asyncio.gather(add, delete, return_exceptions=True)
        for result in (added, deleted):
            assert not isinstance(result, Exception) or result.code() in (FAILED, NOT_FOUND), result
        disk_exists = await exists(caller, DISK, disk.resource_id)
        held = disk.resource_id in await held_ids(caller, vault.vault_id)
        assert disk_exists or not held, (added, deleted)
        assert disk_exists == isinstance(deleted, Exception)
        assert held == (not isinstance(added, Exception))
        outcomes.add((disk_exists, held))
        if held:
            await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id,
                                                                         resource_ids=[disk.resource_id]))
    assert outcomes <= {(True, True), (False, False), (True, False)}

"""Adding, removing and migrating resources: the one-vault-per-resource rule, types, limits, locked vaults."""
from __future__ import annotations

import uuid

import grpc

from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import (DISK, SERVER, TURBO, create_disk, create_server, create_vault, expect_error, ref)

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED, EXISTS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


async def resources_of(caller, vault) -> list[str]:
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    return [r.resource_id for r in got.resources]


async def test_add_and_remove(caller):
    vault = await create_vault(caller)
    disks = [await create_disk(caller, f"d{i}") for i in range(3)]
    added = await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id,
                                                                   resources=[ref(d) for d in disks]))
    assert list(added.added_resource_ids) == [d.resource_id for d in disks]
    removed = await caller.vault.RemoveResources(vp.RemoveResourcesRequest(
        vault_id=vault.vault_id, resource_ids=[disks[1].resource_id]))
    assert list(removed.removed_resource_ids) == [disks[1].resource_id]
    assert await resources_of(caller, vault) == [disks[0].resource_id, disks[2].resource_id]


async def test_add_rejections_write_nothing(caller):
    vault = await create_vault(caller)
    other = await create_vault(caller, name="other")
    disk, held = await create_disk(caller, "free"), await create_disk(caller, "held")
    server = await create_server(caller, "srv", disks=1)
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=other.vault_id, resources=[ref(held)]))
    unknown = vp.ResourceRef(resource_id=str(uuid.uuid4()), type=DISK)
    cases = [
        ([], INVALID, "BackupService.6412"),
        ([ref(disk), ref(server)], INVALID, "BackupService.6102"),            # a server into a disk vault
        ([vp.ResourceRef(resource_id=disk.resource_id, type=TURBO)], INVALID, "BackupService.6102"),
        ([ref(disk), ref(disk)], INVALID, "BackupService.6104"),
        ([ref(disk), vp.ResourceRef(resource_id="../../etc/passwd", type=DISK)], INVALID, "BackupService.6408"),
        ([ref(disk), unknown], NOT_FOUND, "BackupService.6136"),
        ([ref(disk), ref(held)], EXISTS, "BackupService.6103"),               # already in another vault
        ([ref(disk, exclude_volumes=[str(uuid.uuid4())])], INVALID, "BackupService.6411"),  # only for servers
        ([vp.ResourceRef(resource_id=str(uuid.uuid4()), type=DISK) for _ in range(257)], EXHAUSTED,
         "BackupService.6100"),
    ]
    for resources, code, cbr_code in cases:
        await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id,
                                                                            resources=resources)), code, cbr_code)
    assert await resources_of(caller, vault) == []
    await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=str(uuid.uuid4()), resources=[ref(disk)])), NOT_FOUND, "BackupService.6130")


async def test_adding_twice_to_the_same_vault(caller):
    vault = await create_vault(caller)
    disk = await create_disk(caller)
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[ref(disk)]))
    error = await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=vault.vault_id, resources=[ref(disk)])), EXISTS, "BackupService.6103")
    assert "this vault" in error.details()


async def test_another_projects_resource_is_not_found(services, caller):
    stranger = services.caller()
    their_disk = await create_disk(stranger)
    vault = await create_vault(caller)
    await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=vault.vault_id, resources=[ref(their_disk)])), NOT_FOUND, "BackupService.6136")


async def test_server_with_excluded_disks(caller):
    server = await create_server(caller, "web", disks=3)
    vault = await create_vault(caller, object_type=SERVER)
    excluded = server.disks[2].disk_id
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[
        ref(server, exclude_volumes=[excluded])]))
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert list(got.resources[0].exclude_volumes) == [excluded]
    assert got.resources[0].size_bytes == server.size_bytes


async def test_server_exclusion_must_be_its_own_disk(caller):
    server = await create_server(caller, "web", disks=1)
    stray = await create_disk(caller, "stray")
    vault = await create_vault(caller, object_type=SERVER)
    await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[
        ref(server, exclude_volumes=[stray.resource_id])])), INVALID, "BackupService.6411")
    assert await resources_of(caller, vault) == []


async def test_at_most_256_resources(caller):
    vault = await create_vault(caller)
    disks = [await create_disk(caller, f"d{i}", size_bytes=512) for i in range(257)]
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id,
                                                           resources=[ref(d) for d in disks[:256]]), timeout=60)
    await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=vault.vault_id, resources=[ref(disks[256])])), EXHAUSTED, "BackupService.6100")
    assert len(await resources_of(caller, vault)) == 256


async def test_remove_rejections(caller):
    vault = await create_vault(caller)
    disk, loose = await create_disk(caller), await create_disk(caller, "loose")
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[ref(disk)]))
    await expect_error(caller.vault.RemoveResources(vp.RemoveResourcesRequest(
        vault_id=vault.vault_id, resource_ids=[loose.resource_id])), FAILED, "BackupService.6135")
    await expect_error(caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id)),
                       INVALID, "BackupService.6412")
    await caller.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, locked=True))
    await expect_error(caller.vault.RemoveResources(vp.RemoveResourcesRequest(
        vault_id=vault.vault_id, resource_ids=[disk.resource_id])), FAILED, "BackupService.6414")
    assert await resources_of(caller, vault) == [disk.resource_id]


async def test_migrate(caller):
    source, destination = await create_vault(caller, name="src"), await create_vault(caller, name="dst")
    disks = [await create_disk(caller, f"d{i}") for i in range(2)]
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=source.vault_id,
                                                           resources=[ref(d) for d in disks]))
    moved = await caller.vault.MigrateResources(vp.MigrateResourcesRequest(
        vault_id=source.vault_id, destination_vault_id=destination.vault_id, resource_ids=[disks[0].resource_id]))
    assert list(moved.migrated_resource_ids) == [disks[0].resource_id]
    assert await resources_of(caller, source) == [disks[1].resource_id]
    assert await resources_of(caller, destination) == [disks[0].resource_id]


async def test_migrate_rejections(caller):
    source = await create_vault(caller, name="src")
    server_vault = await create_vault(caller, name="srv", object_type=SERVER)
    destination = await create_vault(caller, name="dst")
    disk = await create_disk(caller)
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=source.vault_id, resources=[ref(disk)]))
    ids = [disk.resource_id]
    cases = [
        (server_vault.vault_id, ids, INVALID, "BackupService.6102"),
        (source.vault_id, ids, INVALID, "BackupService.6413"),
        (destination.vault_id, [str(uuid.uuid4())], FAILED, "BackupService.6135"),
        (str(uuid.uuid4()), ids, NOT_FOUND, "BackupService.6130"),
        (destination.vault_id, [], INVALID, "BackupService.6412"),
    ]
    for destination_id, resource_ids, code, cbr_code in cases:
        await expect_error(caller.vault.MigrateResources(vp.MigrateResourcesRequest(
            vault_id=source.vault_id, destination_vault_id=destination_id, resource_ids=resource_ids)),
            code, cbr_code)
    await caller.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=source.vault_id, locked=True))
    await expect_error(caller.vault.MigrateResources(vp.MigrateResourcesRequest(
        vault_id=source.vault_id, destination_vault_id=destination.vault_id, resource_ids=ids)),
        FAILED, "BackupService.6414")
    assert await resources_of(caller, source) == ids
    assert await resources_of(caller, destination) == []


async def test_concurrent_adds_of_one_resource_leave_it_in_one_vault(caller):
    import asyncio
    vaults = [await create_vault(caller, name=f"v{i}") for i in range(4)]
    disk = await create_disk(caller)
    results = await asyncio.gather(*(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=v.vault_id, resources=[ref(disk)])) for v in vaults), return_exceptions=True)
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == 3 and all(e.code() == EXISTS for e in errors), [e.details() for e in errors]
    holders = [v for v in vaults if disk.resource_id in await resources_of(caller, v)]
    assert len(holders) == 1


async def test_another_projects_held_resource_is_not_found(services, caller):
    owner = services.caller()
    their_disk = await create_disk(owner)
    await create_vault(owner, resources=[ref(their_disk)])
    vault = await create_vault(caller)
    await expect_error(caller.vault.AddResources(vp.AddResourcesRequest(
        vault_id=vault.vault_id, resources=[ref(their_disk)])), NOT_FOUND, "BackupService.6136")

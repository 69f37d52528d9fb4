"""VaultService create / get / list / update / delete through real gRPC, and every bad input on the way."""
from __future__ import annotations

import uuid

import grpc
import pytest

from cbr.backup.v1 import task_pb2 as tp
from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import (BACKUP, DISK, REPLICATION, SERVER, TURBO, create_disk, create_vault, expect_error,
                                 ref, vault_count)
from tests.support.services import eventually

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def test_create_get_list_update(caller):
    disk = await create_disk(caller)
    vault = await create_vault(
        caller, name="Prod_vault-01", description="nightly", size_gb=40, auto_expand=True, threshold=70,
        smn_notify=False, tags=[cp.Tag(key="env", value="prod"), cp.Tag(key="team", value="")],
        bind_rules=[cp.Tag(key="backup", value="yes")], resources=[ref(disk)])
    assert vault.name == "Prod_vault-01" and vault.project_id == caller.project_id
    assert vault.status == vp.VAULT_STATUS_AVAILABLE and vault.object_type == DISK
    assert vault.consistent_level == vp.CONSISTENT_LEVEL_CRASH_CONSISTENT
    assert (vault.size_gb, vault.auto_expand, vault.threshold, vault.smn_notify) == (40, True, 70, False)
    assert [r.resource_id for r in vault.resources] == [disk.resource_id]
    assert vault.resources[0].size_bytes == disk.size_bytes and vault.resources[0].name == disk.name
    assert {(t.key, t.value) for t in vault.tags} == {("env", "prod"), ("team", "")}

    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert got == vault

    updated = (await caller.vault.UpdateVault(vp.UpdateVaultRequest(
        vault_id=vault.vault_id, name="renamed", size_gb=80, threshold=90, description=""))).vault
    assert (updated.name, updated.size_gb, updated.threshold, updated.description) == ("renamed", 80, 90, "")
    assert updated.auto_expand is True  # unset fields stay as they were
    assert updated.updated_time.ToDatetime() >= vault.updated_time.ToDatetime()


async def test_defaults(caller):
    vault = await create_vault(caller, name="plain", object_type=SERVER)
    assert vault.smn_notify is True and vault.threshold == 80 and not vault.locked
    assert vault.resources == [] and vault.backup_policy_id == ""


async def test_list_filters_and_paging(caller):
    disk = await create_disk(caller)
    made = [await create_vault(caller, name=f"disk-{i}") for i in range(5)]
    server_vault = await create_vault(caller, name="srv", object_type=SERVER)
    turbo_repl = await create_vault(caller, name="turbo-r", object_type=TURBO, protect_type=REPLICATION)
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=made[2].vault_id, resources=[ref(disk)]))

    everything = await caller.vault.ListVaults(vp.ListVaultsRequest())
    assert everything.count == 7 and len(everything.vaults) == 7
    page = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=2, offset=1)))
    assert page.count == 7 and [v.vault_id for v in page.vaults] == [v.vault_id for v in everything.vaults[1:3]]
    past_end = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=5, offset=50)))
    assert past_end.count == 7 and list(past_end.vaults) == []

    by_type = await caller.vault.ListVaults(vp.ListVaultsRequest(object_type=SERVER))
    assert [v.vault_id for v in by_type.vaults] == [server_vault.vault_id]
    by_protect = await caller.vault.ListVaults(vp.ListVaultsRequest(protect_type=REPLICATION))
    assert [v.vault_id for v in by_protect.vaults] == [turbo_repl.vault_id]
    by_name = await caller.vault.ListVaults(vp.ListVaultsRequest(name="disk-"))
    assert by_name.count == 5
    by_resource = await caller.vault.ListVaults(vp.ListVaultsRequest(resource_ids=[disk.resource_id]))
    assert [v.vault_id for v in by_resource.vaults] == [made[2].vault_id]
    by_id = await caller.vault.ListVaults(vp.ListVaultsRequest(vault_ids=[made[0].vault_id, made[4].vault_id]))
    assert {v.vault_id for v in by_id.vaults} == {made[0].vault_id, made[4].vault_id}
    by_status = await caller.vault.ListVaults(vp.ListVaultsRequest(status=vp.VAULT_STATUS_DELETING))
    assert by_status.count == 0


@pytest.mark.parametrize("limit, offset", [(-1, 0), (1001, 0), (10, -1)])
async def test_list_rejects_bad_paging(caller, limit, offset):
    await expect_error(caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=limit, offset=offset))),
                       INVALID, "BackupService.6409")


async def test_list_rejects_malformed_filter_ids(caller):
    await expect_error(caller.vault.ListVaults(vp.ListVaultsRequest(vault_ids=["x' OR 1=1 --"])),
                       INVALID, "BackupService.6408")


BAD_CREATES = {
    "empty name": (dict(name=""), "BackupService.6401"),
    "65-char name": (dict(name="a" * 65), "BackupService.6401"),
    "space in name": (dict(name="my vault"), "BackupService.6401"),
    "slash in name": (dict(name="../etc"), "BackupService.6401"),
    "non-ascii name": (dict(name="vault\u00e9"), "BackupService.6401"),
    "sql in name": (dict(name="x';DROP TABLE vault.vaults;--"), "BackupService.6401"),
    "size 0": (dict(size_gb=0), "BackupService.6101"),
    "size negative": (dict(size_gb=-5), "BackupService.6101"),
    "size too big": (dict(size_gb=10_485_761), "BackupService.6101"),
    "no object type": (dict(object_type=cp.OBJECT_TYPE_UNSPECIFIED), "BackupService.6403"),
    "unknown object type": (dict(object_type=99), "BackupService.6400"),  # refused at the edge
    "no protect type": (dict(protect_type=vp.PROTECT_TYPE_UNSPECIFIED), "BackupService.6404"),
    "app-consistent disk vault": (dict(consistent_level=vp.CONSISTENT_LEVEL_APP_CONSISTENT), "BackupService.6410"),
    "threshold 0": (dict(threshold=0), "BackupService.6407"),
    "threshold 101": (dict(threshold=101), "BackupService.6407"),
    "long description": (dict(description="d" * 256), "BackupService.6402"),
    "control char in description": (dict(description="a\x00b"), "BackupService.6400"),  # refused at the edge
    "21 tags": (dict(tags=[cp.Tag(key=f"k{i}", value="v") for i in range(21)]), "BackupService.6600"),
    "long tag key": (dict(tags=[cp.Tag(key="k" * 37, value="v")]), "BackupService.6406"),
    "long tag value": (dict(tags=[cp.Tag(key="k", value="v" * 44)]), "BackupService.6406"),
    "empty tag key": (dict(tags=[cp.Tag(key="", value="v")]), "BackupService.6406"),
    "forbidden tag char": (dict(tags=[cp.Tag(key="a=b", value="v")]), "BackupService.6406"),
    "forbidden tag value char": (dict(tags=[cp.Tag(key="a", value="x|y")]), "BackupService.6406"),
    "control char tag": (dict(tags=[cp.Tag(key="a\nb", value="v")]), "BackupService.6406"),
    "duplicate tag keys": (dict(tags=[cp.Tag(key="a", value="1"), cp.Tag(key="a", value="2")]),
                           "BackupService.6406"),
    "bad bind rule": (dict(bind_rules=[cp.Tag(key="a*", value="1")]), "BackupService.6406"),
    "unknown policy": (dict(backup_policy_id=str(uuid.uuid4())), "BackupService.6131"),
    "malformed policy id": (dict(backup_policy_id="nope"), "BackupService.6408"),
}


@pytest.mark.parametrize("case", list(BAD_CREATES))
async def test_create_rejects_bad_input_and_writes_nothing(caller, case):
    fields, code = BAD_CREATES[case]
    request = dict(name="ok", object_type=DISK, protect_type=BACKUP, size_gb=10)
    request.update(fields)
    error = await expect_error(caller.vault.CreateVault(vp.CreateVaultRequest(**request)), _code(code), code)
    assert error.details()
    assert await vault_count(caller) == 0


def _code(cbr_code: str) -> grpc.StatusCode:
    return NOT_FOUND if cbr_code == "BackupService.6131" else INVALID


async def test_create_with_bad_resource_writes_nothing(caller):
    disk = await create_disk(caller)
    missing = vp.ResourceRef(resource_id=str(uuid.uuid4()), type=DISK)
    await expect_error(caller.vault.CreateVault(vp.CreateVaultRequest(
        name="v", object_type=DISK, protect_type=BACKUP, size_gb=10, resources=[ref(disk), missing])),
        NOT_FOUND, "BackupService.6136")
    assert await vault_count(caller) == 0
    # The disk was not claimed by the failed create: another vault can take it.
    vault = await create_vault(caller, resources=[ref(disk)])
    assert len(vault.resources) == 1


async def test_sizes_at_the_limits(caller):
    assert (await create_vault(caller, name="small", size_gb=1)).size_gb == 1
    assert (await create_vault(caller, name="huge", size_gb=10_485_760)).size_gb == 10_485_760
    assert (await create_vault(caller, name="n" * 64)).name == "n" * 64


async def test_update_rejects_bad_input(caller):
    vault = await create_vault(caller)
    for request, code, cbr_code in [
        (vp.UpdateVaultRequest(vault_id=vault.vault_id, size_gb=0), INVALID, "BackupService.6101"),
        (vp.UpdateVaultRequest(vault_id=vault.vault_id, name="bad name"), INVALID, "BackupService.6401"),
        (vp.UpdateVaultRequest(vault_id=vault.vault_id, threshold=200), INVALID, "BackupService.6407"),
        (vp.UpdateVaultRequest(vault_id=str(uuid.uuid4()), name="x"), NOT_FOUND, "BackupService.6130"),
        (vp.UpdateVaultRequest(vault_id="not-a-uuid", name="x"), INVALID, "BackupService.6408"),
    ]:
        await expect_error(caller.vault.UpdateVault(request), code, cbr_code)
    assert (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault == vault


async def test_locking_cannot_be_undone(caller):
    vault = await create_vault(caller)
    locked = (await caller.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, locked=True))).vault
    assert locked.locked
    await expect_error(caller.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, locked=False)),
                       FAILED, "BackupService.6414")
    assert (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.locked


async def test_get_unknown_and_malformed(caller):
    await expect_error(caller.vault.GetVault(vp.GetVaultRequest(vault_id=str(uuid.uuid4()))),
                       NOT_FOUND, "BackupService.6130")
    await expect_error(caller.vault.GetVault(vp.GetVaultRequest(vault_id="")), INVALID, "BackupService.6408")


async def test_delete_runs_as_vault_delete_task_and_frees_resources(caller):
    disk = await create_disk(caller)
    vault = await create_vault(caller, resources=[ref(disk)])
    task_id = (await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))).task_id
    assert uuid.UUID(task_id)
    # While deleting, the vault refuses changes and a second delete.
    await expect_error(caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id)),
                       FAILED, "BackupService.6112")

    async def task_done():
        task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
        return task if task.status == tp.TASK_STATUS_SUCCESS else None
    task = await eventually(task_done)
    assert task.operation_type == tp.OPERATION_TYPE_VAULT_DELETE and task.vault_id == vault.vault_id
    assert task.progress == 100

    async def vault_gone():
        await expect_error(caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id)), NOT_FOUND)
        return True
    await eventually(vault_gone)
    # The disk is free again.
    again = await create_vault(caller, name="second", resources=[ref(disk)])
    assert [r.resource_id for r in again.resources] == [disk.resource_id]


async def test_delete_unknown_vault(caller):
    await expect_error(caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=str(uuid.uuid4()))),
                       NOT_FOUND, "BackupService.6130")


async def test_locked_vault_cannot_be_deleted(caller):
    vault = await create_vault(caller, locked=True)
    await expect_error(caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id)),
                       FAILED, "BackupService.6414")
    assert (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.status == \
        vp.VAULT_STATUS_AVAILABLE

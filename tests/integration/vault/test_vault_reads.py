"""GetVault and ListVaults read a vault and its children in one statement each (cbr_vault.adapters.reads): they
answer what CreateVault wrote, children in their order (resources as added, tags and bind rules sorted)."""
from __future__ import annotations

import grpc

from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import create_disk, create_vault, expect_error, ref


async def test_get_and_list_answer_what_create_answered(caller):
    disks = [await create_disk(caller, f"disk-{i}") for i in range(3)]
    made = await create_vault(
        caller, name="reads", auto_bind=True, resources=[ref(disks[2]), ref(disks[0]), ref(disks[1])],
        tags=[cp.Tag(key="zeta", value="1"), cp.Tag(key="alpha", value=""), cp.Tag(key="mid", value="x")],
        bind_rules=[cp.Tag(key="env", value="stage"), cp.Tag(key="env", value="prod"), cp.Tag(key="app", value="a")])
    assert [r.resource_id for r in made.resources] == [disks[2].resource_id, disks[0].resource_id,
                                                       disks[1].resource_id]  # the order they were added in
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=made.vault_id))).vault
    # tags and bind rules come back sorted (CreateVault answers them in the request's order)
    assert [(t.key, t.value) for t in got.tags] == [("alpha", ""), ("mid", "x"), ("zeta", "1")]
    assert [(t.key, t.value) for t in got.bind_rules] == [("app", "a"), ("env", "prod"), ("env", "stage")]
    got_rest, made_rest = vp.Vault(), vp.Vault()
    got_rest.CopyFrom(got)
    made_rest.CopyFrom(made)
    for vault in (got_rest, made_rest):
        vault.ClearField("tags")
        vault.ClearField("bind_rules")
    assert got_rest == made_rest  # every other field, the resources in their order included
    listed = await caller.vault.ListVaults(vp.ListVaultsRequest(vault_ids=[made.vault_id]))
    assert listed.count == 1 and list(listed.vaults) == [got]
    by_resource = await caller.vault.ListVaults(vp.ListVaultsRequest(resource_ids=[disks[0].resource_id]))
    assert [v.vault_id for v in by_resource.vaults] == [made.vault_id]


async def test_a_vault_without_children_reads_empty_lists(caller):
    made = await create_vault(caller, name="bare")
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=made.vault_id))).vault
    assert got == made
    assert (list(got.resources), list(got.tags), list(got.bind_rules)) == ([], [], [])


async def test_list_counts_every_match_on_every_page(caller):
    for i in range(5):
        await create_vault(caller, name=f"page-{i}")
    first = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=2)))
    middle = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=2, offset=2)))
    last = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=2, offset=4)))
    beyond = await caller.vault.ListVaults(vp.ListVaultsRequest(page=cp.PageRequest(limit=2, offset=9)))
    assert [p.count for p in (first, middle, last, beyond)] == [5, 5, 5, 5]
    assert [len(p.vaults) for p in (first, middle, last, beyond)] == [2, 2, 1, 0]
    names = [v.name for p in (first, middle, last) for v in p.vaults]
    assert names == [f"page-{i}" for i in reversed(range(5))]  # newest first, no vault twice
    none = await caller.vault.ListVaults(vp.ListVaultsRequest(name="no-such-vault"))
    assert (none.count, list(none.vaults)) == (0, [])


async def test_another_projects_vault_is_not_found(caller, services):
    made = await create_vault(caller, name="mine")
    stranger = services.caller()
    await expect_error(stranger.vault.GetVault(vp.GetVaultRequest(vault_id=made.vault_id)),
                       grpc.StatusCode.NOT_FOUND, "BackupService.6130")
    assert (await stranger.vault.ListVaults(vp.ListVaultsRequest(vault_ids=[made.vault_id]))).count == 0

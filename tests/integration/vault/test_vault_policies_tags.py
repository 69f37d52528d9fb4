"""Policy association (policies learned from the policy service's events), bind rules and tags."""
from __future__ import annotations

import uuid

import grpc

from cbr.common.v1 import common_pb2 as cp
from cbr.events.v1 import policy_events_pb2 as pe
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import REPLICATION, SERVER, create_vault, expect_error
from tests.support.services import eventually

INVALID, NOT_FOUND, FAILED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.FAILED_PRECONDITION)


async def announce_policy(services, project_id: str, operation_type: str = "backup") -> str:
    """Publishes cbr.policy.created as the policy service will, and returns the policy id."""
    policy_id = str(uuid.uuid4())
    event = pe.PolicyCreated(event_id=str(uuid.uuid4()), project_id=project_id, policy_id=policy_id,
                             name=f"p-{operation_type}", operation_type=operation_type, enabled=True)
    js = services.runtimes["vault"].js
    await js.publish("cbr.policy.created", event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})
    return policy_id


async def associate(caller, vault_id: str, policy_id: str, destination: str = ""):
    return await caller.vault.AssociatePolicy(vp.AssociatePolicyRequest(
        vault_id=vault_id, policy_id=policy_id, destination_vault_id=destination))


async def test_associate_and_dissociate(services, caller):
    vault = await create_vault(caller, object_type=SERVER)
    backup_policy = await announce_policy(services, caller.project_id)
    replication_policy = await announce_policy(services, caller.project_id, "replication")
    await eventually(lambda: associate(caller, vault.vault_id, backup_policy))
    await eventually(lambda: associate(caller, vault.vault_id, replication_policy, str(uuid.uuid4())))
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert (got.backup_policy_id, got.replication_policy_id) == (backup_policy, replication_policy)
    listed = await caller.vault.ListVaults(vp.ListVaultsRequest(policy_id=backup_policy))
    assert [v.vault_id for v in listed.vaults] == [vault.vault_id]
    await associate(caller, vault.vault_id, backup_policy)  # associating again changes nothing

    await caller.vault.DissociatePolicy(vp.DissociatePolicyRequest(vault_id=vault.vault_id, policy_id=backup_policy))
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert got.backup_policy_id == "" and got.replication_policy_id == replication_policy
    await expect_error(caller.vault.DissociatePolicy(vp.DissociatePolicyRequest(
        vault_id=vault.vault_id, policy_id=backup_policy)), FAILED, "BackupService.6128")


async def test_policy_rules(services, caller):
    disk_vault = await create_vault(caller)
    first = await announce_policy(services, caller.project_id)
    second = await announce_policy(services, caller.project_id)
    replication = await announce_policy(services, caller.project_id, "replication")
    await eventually(lambda: associate(caller, disk_vault.vault_id, first))
    # One backup policy per vault.
    await eventually(lambda: expect_error(associate(caller, disk_vault.vault_id, second), FAILED,
                                          "BackupService.6126"))
    # A disk vault takes a replication policy (issue 12: disks replicate too), beside its backup policy.
    destination = str(uuid.uuid4())
    await eventually(lambda: associate(caller, disk_vault.vault_id, replication, destination))
    # One replication policy per vault.
    other_replication = await announce_policy(services, caller.project_id, "replication")
    await eventually(lambda: expect_error(associate(caller, disk_vault.vault_id, other_replication), FAILED,
                                          "BackupService.6126"))
    # A replication vault takes neither: backup policies apply to backup vaults, and replicas are never
    # replicated again.
    replica_vault = await create_vault(caller, name="replicas", protect_type=REPLICATION)
    await expect_error(associate(caller, replica_vault.vault_id, second), FAILED, "BackupService.6127")
    await eventually(lambda: expect_error(associate(caller, replica_vault.vault_id, other_replication), FAILED,
                                          "BackupService.6127"))
    await expect_error(associate(caller, disk_vault.vault_id, str(uuid.uuid4())), NOT_FOUND, "BackupService.6131")
    await expect_error(associate(caller, disk_vault.vault_id, "policy-1"), INVALID, "BackupService.6408")
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=disk_vault.vault_id))).vault
    assert (got.backup_policy_id, got.replication_policy_id) == (first, replication)
    assert got.object_type == cp.OBJECT_TYPE_DISK
    refused = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=replica_vault.vault_id))).vault
    assert (refused.backup_policy_id, refused.replication_policy_id) == ("", "")


async def test_another_projects_policy_is_not_found(services, caller):
    vault = await create_vault(caller)
    theirs = await announce_policy(services, "some-other-project")
    mine = await announce_policy(services, caller.project_id)
    await eventually(lambda: associate(caller, vault.vault_id, mine))  # events are in: theirs was seen first
    await expect_error(associate(caller, vault.vault_id, theirs), NOT_FOUND, "BackupService.6131")


async def test_deleted_policy_is_dissociated(services, caller):
    vault = await create_vault(caller)
    policy_id = await announce_policy(services, caller.project_id)
    await eventually(lambda: associate(caller, vault.vault_id, policy_id))
    event = pe.PolicyDeleted(event_id=str(uuid.uuid4()), project_id=caller.project_id, policy_id=policy_id)
    await services.runtimes["vault"].js.publish("cbr.policy.deleted", event.SerializeToString(),
                                                headers={"Nats-Msg-Id": event.event_id})

    async def cleared():
        got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
        return got.backup_policy_id == ""
    await eventually(cleared)


async def test_bind_rules(caller):
    vault = await create_vault(caller)
    rules = [cp.Tag(key="env", value="prod"), cp.Tag(key="env", value="stage")]
    got = (await caller.vault.SetBindRules(vp.SetBindRulesRequest(vault_id=vault.vault_id, auto_bind=True,
                                                                  bind_rules=rules))).vault
    assert got.auto_bind and {(t.key, t.value) for t in got.bind_rules} == {("env", "prod"), ("env", "stage")}
    await expect_error(caller.vault.SetBindRules(vp.SetBindRulesRequest(
        vault_id=vault.vault_id, bind_rules=[cp.Tag(key="a<b", value="")])), INVALID, "BackupService.6406")
    still = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert len(still.bind_rules) == 2


async def test_tags(caller):
    vault = await create_vault(caller, tags=[cp.Tag(key="env", value="prod")])
    other = await create_vault(caller, name="other", tags=[cp.Tag(key="env", value="dev")])
    tags = (await caller.vault.CreateVaultTags(vp.CreateVaultTagsRequest(
        vault_id=vault.vault_id, tags=[cp.Tag(key="env", value="stage"), cp.Tag(key="owner", value="ops")]))).tags
    assert {(t.key, t.value) for t in tags} == {("env", "stage"), ("owner", "ops")}
    listed = (await caller.vault.ListVaultTags(vp.ListVaultTagsRequest(vault_id=vault.vault_id))).tags
    assert list(listed) == list(tags)
    project = (await caller.vault.ListProjectTags(vp.ListProjectTagsRequest())).tags
    assert {t.key: sorted(t.values) for t in project} == {"env": ["dev", "stage"], "owner": ["ops"]}
    left = (await caller.vault.DeleteVaultTags(vp.DeleteVaultTagsRequest(vault_id=vault.vault_id,
                                                                         keys=["owner"]))).tags
    assert [(t.key, t.value) for t in left] == [("env", "stage")]
    await expect_error(caller.vault.DeleteVaultTags(vp.DeleteVaultTagsRequest(vault_id=vault.vault_id,
                                                                              keys=["nope"])), INVALID)
    assert other.tags[0].value == "dev"


async def test_tag_limit_counts_existing_tags(caller):
    vault = await create_vault(caller, tags=[cp.Tag(key=f"k{i}", value="v") for i in range(20)])
    await expect_error(caller.vault.CreateVaultTags(vp.CreateVaultTagsRequest(
        vault_id=vault.vault_id, tags=[cp.Tag(key="one-more", value="v")])), INVALID, "BackupService.6600")
    # Overwriting an existing key is not one more tag.
    tags = (await caller.vault.CreateVaultTags(vp.CreateVaultTagsRequest(
        vault_id=vault.vault_id, tags=[cp.Tag(key="k0", value="new")]))).tags
    assert len(tags) == 20 and {t.key: t.value for t in tags}["k0"] == "new"


async def test_create_with_a_policy(services, caller):
    backup_policy = await announce_policy(services, caller.project_id)
    replication_policy = await announce_policy(services, caller.project_id, "replication")
    vault = await eventually(lambda: create_vault(caller, object_type=SERVER, backup_policy_id=backup_policy))
    assert vault.backup_policy_id == backup_policy
    # A replication policy does not go into the backup slot.
    await eventually(lambda: expect_error(create_vault(caller, name="r", object_type=SERVER,
                                                       backup_policy_id=replication_policy),
                                          FAILED, "BackupService.6127"))
    listed = await caller.vault.ListVaults(vp.ListVaultsRequest(policy_id=backup_policy))
    assert [v.vault_id for v in listed.vaults] == [vault.vault_id]

"""PolicyService create / get / list / update / delete through real gRPC: every bad input with its code and
nothing written, the per-project limit under concurrency, the events, and the vault bindings projected from the
vault service's events."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cbr.common.v1 import common_pb2 as cp
from cbr.events.v1 import policy_events_pb2 as pe
from cbr.events.v1 import vault_events_pb2 as ve
from cbr.policy.v1 import policy_pb2 as pp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from tests.support.calls import SERVER, create_vault, expect_error
from tests.support.services import eventually

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
EXHAUSTED, DENIED = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED
BACKUP, REPLICATION = pp.OPERATION_TYPE_BACKUP, pp.OPERATION_TYPE_REPLICATION
DAILY = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
WEEKLY = "FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=14;BYMINUTE=00"


def stamp(when: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when)
    return result


def backup_request(name: str = "daily", patterns=(DAILY,), **definition) -> pp.CreatePolicyRequest:
    return pp.CreatePolicyRequest(name=name, operation_type=BACKUP, trigger=pp.PolicyTrigger(patterns=list(patterns)),
                                  operation_definition=pp.OperationDefinition(**definition))


def replication_request(name: str = "copy", **definition) -> pp.CreatePolicyRequest:
    definition = {"destination_region": "eu-de-2", "destination_project_id": "project-far", **definition}
    return pp.CreatePolicyRequest(name=name, operation_type=REPLICATION,
                                  trigger=pp.PolicyTrigger(patterns=[WEEKLY]),
                                  operation_definition=pp.OperationDefinition(**definition))


async def create(caller, request: pp.CreatePolicyRequest) -> pp.Policy:
    return (await caller.policies.CreatePolicy(request)).policy


async def get(caller, policy_id: str) -> pp.Policy:
    return (await caller.policies.GetPolicy(pp.GetPolicyRequest(policy_id=policy_id))).policy


async def policy_count(caller, operation_type=0) -> int:
    return (await caller.policies.ListPolicies(pp.ListPoliciesRequest(operation_type=operation_type))).count


async def test_create_get_list(caller):
    before = dt.datetime.now(dt.timezone.utc)
    policy = await create(caller, backup_request(max_backups=10, day_backups=7, week_backups=4, month_backups=12,
                                                 year_backups=2, timezone="UTC+08:00", full_backup_interval=10))
    assert policy.project_id == caller.project_id and policy.name == "daily" and policy.enabled
    assert policy.operation_type == BACKUP and list(policy.trigger.patterns) == [DAILY]
    definition = policy.operation_definition
    assert (definition.max_backups, definition.day_backups, definition.week_backups, definition.month_backups,
            definition.year_backups, definition.full_backup_interval) == (10, 7, 4, 12, 2, 10)
    assert not definition.HasField("retention_duration_days")  # unset is CBR's -1
    assert definition.timezone == "UTC+08:00"
    # No start time given: the schedule starts at creation.
    assert policy.trigger.start_time == policy.created_time == policy.updated_time
    assert policy.created_time.ToDatetime(dt.timezone.utc) >= before.replace(microsecond=0)
    assert list(policy.associated_vaults) == []
    assert await get(caller, policy.policy_id) == policy

    start = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    replication = await create(caller, pp.CreatePolicyRequest(
        name="copy", operation_type=REPLICATION, enabled=False,
        trigger=pp.PolicyTrigger(patterns=[WEEKLY, DAILY], start_time=stamp(start)),
        operation_definition=pp.OperationDefinition(destination_region="eu-de-2", destination_project_id="far",
                                                    retention_duration_days=30, timezone="Europe/Berlin")))
    assert not replication.enabled and replication.trigger.start_time.ToDatetime(dt.timezone.utc) == start
    assert replication.operation_definition.retention_duration_days == 30
    assert not replication.operation_definition.HasField("max_backups")

    listed = await caller.policies.ListPolicies(pp.ListPoliciesRequest())
    assert listed.count == 2 and [p.policy_id for p in listed.policies] == [replication.policy_id, policy.policy_id]
    only_backup = await caller.policies.ListPolicies(pp.ListPoliciesRequest(operation_type=BACKUP))
    assert only_backup.count == 1 and only_backup.policies[0] == policy
    page = await caller.policies.ListPolicies(pp.ListPoliciesRequest(page=cp.PageRequest(limit=1, offset=1)))
    assert page.count == 2 and [p.policy_id for p in page.policies] == [policy.policy_id]
    none = await caller.policies.ListPolicies(pp.ListPoliciesRequest(vault_id=str(uuid.uuid4())))
    assert none.count == 0 and list(none.policies) == []


TOO_MANY = [f"FREQ=WEEKLY;BYDAY=MO;BYHOUR={h};BYMINUTE=0" for h in range(24)] + [WEEKLY]

BAD_CREATES = [
    ("empty name", backup_request(name=""), "6801"),
    ("name with a space", backup_request(name="a b"), "6801"),
    ("name too long", backup_request(name="x" * 65), "6801"),
    ("no operation type", pp.CreatePolicyRequest(name="p", trigger=pp.PolicyTrigger(patterns=[DAILY])), "6117"),
    ("unknown operation type", pp.CreatePolicyRequest(name="p", operation_type=7,  # refused at the edge
                                                      trigger=pp.PolicyTrigger(patterns=[DAILY])), "6400"),
    ("no trigger", pp.CreatePolicyRequest(name="p", operation_type=BACKUP), "6802"),
    ("empty pattern", backup_request(patterns=[""]), "6802"),
    ("hourly", backup_request(patterns=["FREQ=HOURLY;BYHOUR=1;BYMINUTE=0"]), "6802"),
    ("COUNT", backup_request(patterns=["FREQ=DAILY;COUNT=3;BYHOUR=1;BYMINUTE=0"]), "6802"),
    ("interval 31", backup_request(patterns=["FREQ=DAILY;INTERVAL=31;BYHOUR=1;BYMINUTE=0"]), "6802"),
    ("BYHOUR 24", backup_request(patterns=["FREQ=DAILY;BYHOUR=24;BYMINUTE=0"]), "6802"),
    ("25 patterns", backup_request(patterns=TOO_MANY), "6803"),
    ("30 minutes apart", backup_request(patterns=["FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"]), "6803"),
    ("across midnight", backup_request(patterns=["FREQ=DAILY;BYHOUR=23;BYMINUTE=30",
                                                 "FREQ=DAILY;BYHOUR=0;BYMINUTE=10"]), "6803"),
    ("unknown zone", backup_request(timezone="Mars/Olympus"), "6804"),
    ("offset out of range", backup_request(timezone="UTC+15:00"), "6804"),
    ("max_backups 0", backup_request(max_backups=0), "6805"),
    ("max_backups too big", backup_request(max_backups=100_000), "6805"),
    ("max_backups -2", backup_request(max_backups=-2), "6805"),
    ("retention 0 days", backup_request(retention_duration_days=0), "6805"),
    ("retention too long", backup_request(retention_duration_days=100_000), "6805"),
    ("day_backups 101", backup_request(day_backups=101, timezone="UTC"), "6805"),
    ("year_backups -1", backup_request(year_backups=-1, timezone="UTC"), "6805"),
    ("days and count", backup_request(retention_duration_days=7, max_backups=5), "6806"),
    ("days and GFS", backup_request(retention_duration_days=7, week_backups=1, timezone="UTC"), "6806"),
    ("GFS without a zone", backup_request(day_backups=3), "6807"),
    ("backup with a region", backup_request(destination_region="eu-de-2"), "6808"),
    ("backup with a project", backup_request(destination_project_id="far"), "6808"),
    ("replication without region", replication_request(destination_region=""), "6808"),
    ("replication without project", replication_request(destination_project_id=""), "6808"),
    ("replication to this region", replication_request(destination_region="local"), "6808"),
    ("project id too long", replication_request(destination_project_id="p" * 256), "6808"),
    ("full interval 0", backup_request(full_backup_interval=0), "6813"),
    ("full interval 101", backup_request(full_backup_interval=101), "6813"),
    ("full interval on replication", replication_request(full_backup_interval=5), "6813"),
    ("start in 1960", pp.CreatePolicyRequest(name="p", operation_type=BACKUP, trigger=pp.PolicyTrigger(
        patterns=[DAILY], start_time=stamp(dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc)))), "6812"),
]


@pytest.mark.parametrize("request_, code", [(r, c) for _, r, c in BAD_CREATES], ids=[n for n, _, _ in BAD_CREATES])
async def test_bad_creates_write_nothing(caller, request_, code):
    await create(caller, backup_request(name="existing"))
    await expect_error(caller.policies.CreatePolicy(request_), INVALID, f"BackupService.{code}")
    assert await policy_count(caller) == 1


async def test_the_33rd_policy_of_a_type_is_refused_even_when_racing(caller):
    results = await asyncio.gather(*(caller.policies.CreatePolicy(backup_request(name=f"p{i}")) for i in range(40)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(results) - len(refused) == 32
    for error in refused:
        await expect_error(_raise(error), EXHAUSTED, "BackupService.6001")
    assert await policy_count(caller, BACKUP) == 32
    await expect_error(caller.policies.CreatePolicy(backup_request(name="one-more")), EXHAUSTED,
                       "BackupService.6001")
    # The limit is per type: replication policies still fit.
    await create(caller, replication_request())
    assert await policy_count(caller) == 33


async def _raise(error):
    raise error


async def test_update(caller):
    original = await create(caller, backup_request(patterns=[DAILY, WEEKLY], day_backups=7, max_backups=3,
                                                   timezone="Europe/Berlin"))
    renamed = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(
        policy_id=original.policy_id, name="renamed", enabled=False))).policy
    assert (renamed.name, renamed.enabled) == ("renamed", False)
    assert renamed.trigger == original.trigger and renamed.operation_definition == original.operation_definition
    assert renamed.created_time == original.created_time
    assert renamed.updated_time.ToDatetime() > original.updated_time.ToDatetime()

    # A trigger given replaces the old one whole: its patterns, and its start (unset: from creation).
    start = dt.datetime(2031, 5, 1, 12, tzinfo=dt.timezone.utc)
    new_trigger = pp.PolicyTrigger(patterns=["FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30"], start_time=stamp(start))
    updated = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=original.policy_id,
                                                                         trigger=new_trigger))).policy
    assert updated.trigger == new_trigger and updated.name == "renamed"
    assert updated.operation_definition == original.operation_definition
    again = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(
        policy_id=original.policy_id, trigger=pp.PolicyTrigger(patterns=[WEEKLY])))).policy
    assert list(again.trigger.patterns) == [WEEKLY] and again.trigger.start_time == original.created_time

    # So does an operation definition: the GFS counts and the zone are gone with the old one.
    replaced = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(
        policy_id=original.policy_id, operation_definition=pp.OperationDefinition(retention_duration_days=30)))).policy
    assert replaced.operation_definition == pp.OperationDefinition(retention_duration_days=30)
    assert await get(caller, original.policy_id) == replaced

    # Nothing given changes nothing.
    same = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=original.policy_id))).policy
    assert same == replaced


BAD_UPDATES = [
    ("bad name", pp.UpdatePolicyRequest(name="no spaces"), INVALID, "6801"),
    ("bad pattern", pp.UpdatePolicyRequest(trigger=pp.PolicyTrigger(patterns=["FREQ=YEARLY"])), INVALID, "6802"),
    ("empty trigger", pp.UpdatePolicyRequest(trigger=pp.PolicyTrigger()), INVALID, "6802"),
    ("too dense", pp.UpdatePolicyRequest(trigger=pp.PolicyTrigger(patterns=["FREQ=DAILY;BYHOUR=1,2;BYMINUTE=0,1"])),
     INVALID, "6803"),
    ("bad zone", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(timezone="UTC+99:00")),
     INVALID, "6804"),
    ("bad count", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(max_backups=0)), INVALID, "6805"),
    ("conflict", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(
        max_backups=2, retention_duration_days=2)), INVALID, "6806"),
    ("GFS without zone", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(month_backups=1)),
     INVALID, "6807"),
    ("destination on backup", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(
        destination_region="far")), INVALID, "6808"),
    ("full interval", pp.UpdatePolicyRequest(operation_definition=pp.OperationDefinition(full_backup_interval=-3)),
     INVALID, "6813"),
    ("unknown policy", pp.UpdatePolicyRequest(policy_id=str(uuid.uuid4()), name="x"), NOT_FOUND, "6820"),
    ("malformed id", pp.UpdatePolicyRequest(policy_id="policy-1", name="x"), INVALID, "6810"),
]


@pytest.mark.parametrize("request_, status, code", [(r, s, c) for _, r, s, c in BAD_UPDATES],
                         ids=[n for n, *_ in BAD_UPDATES])
async def test_bad_updates_change_nothing(caller, request_, status, code):
    policy = await create(caller, backup_request())
    request = pp.UpdatePolicyRequest()
    request.CopyFrom(request_)
    if not request.policy_id:
        request.policy_id = policy.policy_id
    await expect_error(caller.policies.UpdatePolicy(request), status, f"BackupService.{code}")
    assert await get(caller, policy.policy_id) == policy


async def test_replication_updates_keep_their_destination_rules(caller):
    policy = await create(caller, replication_request())
    await expect_error(caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(
        policy_id=policy.policy_id, operation_definition=pp.OperationDefinition(max_backups=5))),
        INVALID, "BackupService.6808")
    moved = (await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(
        policy_id=policy.policy_id, operation_definition=pp.OperationDefinition(
            destination_region="ap-sg-1", destination_project_id="other", max_backups=5)))).policy
    assert moved.operation_type == REPLICATION  # never changes
    assert (moved.operation_definition.destination_region, moved.operation_definition.max_backups) == ("ap-sg-1", 5)


async def test_delete(caller):
    policy = await create(caller, backup_request())
    keep = await create(caller, backup_request(name="keep"))
    assert await caller.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id)) == \
        pp.DeletePolicyResponse()
    await expect_error(get(caller, policy.policy_id), NOT_FOUND, "BackupService.6820")
    await expect_error(caller.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id)),
                       NOT_FOUND, "BackupService.6820")
    await expect_error(caller.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id="nope")), INVALID,
                       "BackupService.6810")
    assert [p.policy_id for p in (await caller.policies.ListPolicies(pp.ListPoliciesRequest())).policies] == \
        [keep.policy_id]


async def test_bad_reads(caller):
    await expect_error(get(caller, ""), INVALID, "BackupService.6810")
    await expect_error(get(caller, str(uuid.uuid4())), NOT_FOUND, "BackupService.6820")
    for request in (pp.ListPoliciesRequest(page=cp.PageRequest(limit=1001)),
                    pp.ListPoliciesRequest(page=cp.PageRequest(offset=-1))):
        await expect_error(caller.policies.ListPolicies(request), INVALID, "BackupService.6811")
    await expect_error(caller.policies.ListPolicies(pp.ListPoliciesRequest(operation_type=9)), INVALID,
                       "BackupService.6400")  # an undefined enum number: refused at the edge
    await expect_error(caller.policies.ListPolicies(pp.ListPoliciesRequest(vault_id="vault-1")), INVALID,
                       "BackupService.6810")


async def test_another_projects_policy_is_not_found(services, caller):
    policy = await create(caller, backup_request())
    other = services.caller()
    await expect_error(get(other, policy.policy_id), NOT_FOUND, "BackupService.6820")
    await expect_error(other.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=policy.policy_id, name="x")),
                       NOT_FOUND, "BackupService.6820")
    await expect_error(other.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id)),
                       NOT_FOUND, "BackupService.6820")
    assert await policy_count(other) == 0
    assert await get(caller, policy.policy_id) == policy


async def test_backups_and_vaults_role_cannot_change_policies(services, caller):
    policy = await create(caller, backup_request())
    limited = services.caller(project_id=caller.project_id, roles=("cbr_backups_vaults_full_access",))
    await expect_error(limited.policies.CreatePolicy(backup_request(name="mine")), DENIED)
    await expect_error(limited.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=policy.policy_id, name="x")),
                       DENIED)
    await expect_error(limited.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id)), DENIED)
    assert await get(limited, policy.policy_id) == policy  # reading is allowed
    assert await policy_count(limited) == 1


async def test_events(services, caller):
    seen: list = []
    subscription = await services.runtimes["policy"].nats.subscribe("cbr.policy.*", cb=_collect(seen))
    try:
        policy = await create(caller, replication_request())
        await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=policy.policy_id, enabled=False))
        await caller.policies.UpdatePolicy(pp.UpdatePolicyRequest(policy_id=policy.policy_id))  # no change, no event
        await caller.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id))

        def mine():
            return [(s, e) for s, e in seen if e.policy_id == policy.policy_id]
        await eventually(lambda: _true(len(mine()) >= 3))
        await asyncio.sleep(0.3)
        (s1, created), (s2, updated), (s3, deleted) = mine()
    finally:
        await subscription.unsubscribe()
    assert (s1, s2, s3) == ("cbr.policy.created", "cbr.policy.updated", "cbr.policy.deleted")
    assert (created.project_id, created.name, created.operation_type, created.enabled) == \
        (caller.project_id, "copy", "replication", True)
    assert (created.destination_region, created.destination_project_id) == ("eu-de-2", "project-far")
    assert (updated.enabled, updated.name, updated.destination_region) == (False, "copy", "eu-de-2")
    assert deleted.project_id == caller.project_id
    assert len({created.event_id, updated.event_id, deleted.event_id}) == 3


def _collect(seen: list):
    types = {"cbr.policy.created": pe.PolicyCreated, "cbr.policy.updated": pe.PolicyUpdated,
             "cbr.policy.deleted": pe.PolicyDeleted}

    async def on_message(msg):
        if msg.subject in types:
            seen.append((msg.subject, types[msg.subject].FromString(msg.data)))
    return on_message


async def _true(value: bool) -> bool:
    return value


# Bindings: the vault service associates, this service learns it from the vault service's events.


async def associated(caller, policy_id: str) -> list[tuple[str, str]]:
    return [(v.vault_id, v.destination_vault_id) for v in (await get(caller, policy_id)).associated_vaults]


async def listed_for_vault(caller, vault_id: str) -> list[str]:
    reply = await caller.policies.ListPolicies(pp.ListPoliciesRequest(vault_id=vault_id))
    assert reply.count == len(reply.policies)
    return [p.policy_id for p in reply.policies]


async def test_association_shows_in_get_and_list(caller):
    policy = await create(caller, backup_request())
    replication = await create(caller, replication_request())
    other_policy = await create(caller, backup_request(name="other"))
    vault = await create_vault(caller, object_type=SERVER)
    second = await create_vault(caller, name="second", object_type=SERVER)
    destination = str(uuid.uuid4())

    # The vault service learns of new policies from cbr.policy.created, so it may not know them yet.
    await eventually(lambda: caller.vault.AssociatePolicy(vp.AssociatePolicyRequest(
        vault_id=vault.vault_id, policy_id=policy.policy_id)))
    await eventually(lambda: caller.vault.AssociatePolicy(vp.AssociatePolicyRequest(
        vault_id=vault.vault_id, policy_id=replication.policy_id, destination_vault_id=destination)))
    await eventually(lambda: caller.vault.AssociatePolicy(vp.AssociatePolicyRequest(
        vault_id=second.vault_id, policy_id=policy.policy_id)))

    async def all_bound():
        return (await associated(caller, policy.policy_id) == [(vault.vault_id, ""), (second.vault_id, "")]
                and await associated(caller, replication.policy_id) == [(vault.vault_id, destination)])
    await eventually(all_bound)
    assert sorted(await listed_for_vault(caller, vault.vault_id)) == sorted([policy.policy_id, replication.policy_id])
    assert await listed_for_vault(caller, second.vault_id) == [policy.policy_id]
    filtered = await caller.policies.ListPolicies(pp.ListPoliciesRequest(vault_id=vault.vault_id,
                                                                         operation_type=REPLICATION))
    assert [p.policy_id for p in filtered.policies] == [replication.policy_id]
    assert await associated(caller, other_policy.policy_id) == []

    await caller.vault.DissociatePolicy(vp.DissociatePolicyRequest(vault_id=vault.vault_id,
                                                                   policy_id=policy.policy_id))

    async def dissociated():
        return await associated(caller, policy.policy_id) == [(second.vault_id, "")]
    await eventually(dissociated)
    assert await listed_for_vault(caller, vault.vault_id) == [replication.policy_id]

    # Deleting the policy takes its bindings along, and the vault service drops it from its vaults.
    await caller.policies.DeletePolicy(pp.DeletePolicyRequest(policy_id=policy.policy_id))
    assert await listed_for_vault(caller, second.vault_id) == []

    async def vault_cleared():
        got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=second.vault_id))).vault
        return got.backup_policy_id == ""
    await eventually(vault_cleared)
    assert await associated(caller, replication.policy_id) == [(vault.vault_id, destination)]


async def test_another_projects_bindings_stay_hidden(services, caller):
    policy = await create(caller, backup_request())
    vault = await create_vault(caller)
    await eventually(lambda: caller.vault.AssociatePolicy(vp.AssociatePolicyRequest(
        vault_id=vault.vault_id, policy_id=policy.policy_id)))
    await eventually(lambda: listed_for_vault(caller, vault.vault_id))
    assert await listed_for_vault(services.caller(), vault.vault_id) == []


async def publish_vault_event(services, subject: str, event, occurred: dt.datetime) -> None:
    event.event_id = str(uuid.uuid4())
    event.occurred_time.FromDatetime(occurred)
    await services.runtimes["policy"].js.publish(subject, event.SerializeToString(),
                                                 headers={"Nats-Msg-Id": event.event_id})


async def test_late_events_cannot_undo_newer_ones(services, caller):
    """Association events come through separate consumers, so they may be applied out of order; the newest
    change of a vault's slot wins, and a deleted vault keeps no bindings."""
    policy = await create(caller, backup_request())
    marker = await create(caller, backup_request(name="marker"))
    vault_id, marker_vault = str(uuid.uuid4()), str(uuid.uuid4())
    t0 = dt.datetime.now(dt.timezone.utc)

    def change(vault, policy_id=policy.policy_id, operation_type="backup"):
        return ve.VaultPolicyChanged(project_id=caller.project_id, vault_id=vault, policy_id=policy_id,
                                     operation_type=operation_type)

    async def applied_so_far(subject: str):
        """Events on one subject are applied in order: once a marker event is in, so is everything before it.
        The marker vault is bound on the association subject and unbound on the dissociation one."""
        binds = subject == "cbr.vault.policy_associated"
        await publish_vault_event(services, subject, change(marker_vault, marker.policy_id),
                                  dt.datetime.now(dt.timezone.utc))
        await eventually(lambda: _equal(associated(caller, marker.policy_id), [(marker_vault, "")] if binds else []))

    await applied_so_far("cbr.vault.policy_associated")
    # The dissociation (t0 + 2s) is applied before the association it undoes (t0 + 1s): nothing stays bound.
    await publish_vault_event(services, "cbr.vault.policy_dissociated", change(vault_id), t0 + dt.timedelta(seconds=2))
    await applied_so_far("cbr.vault.policy_dissociated")
    await publish_vault_event(services, "cbr.vault.policy_associated", change(vault_id), t0 + dt.timedelta(seconds=1))
    await applied_so_far("cbr.vault.policy_associated")
    assert await associated(caller, policy.policy_id) == []

    # A newer association binds; a dissociation without a type (as after a policy deletion) still finds it.
    await publish_vault_event(services, "cbr.vault.policy_associated", change(vault_id), t0 + dt.timedelta(seconds=3))
    await eventually(lambda: _equal(associated(caller, policy.policy_id), [(vault_id, "")]))
    await publish_vault_event(services, "cbr.vault.policy_dissociated", change(vault_id, operation_type=""),
                              t0 + dt.timedelta(seconds=4))
    await eventually(lambda: _equal(associated(caller, policy.policy_id), []))

    # A deleted vault's bindings go, and an association older than the deletion does not bring them back.
    await publish_vault_event(services, "cbr.vault.policy_associated", change(vault_id), t0 + dt.timedelta(seconds=5))
    await eventually(lambda: _equal(associated(caller, policy.policy_id), [(vault_id, "")]))
    await publish_vault_event(services, "cbr.vault.deleted",
                              ve.VaultDeleted(project_id=caller.project_id, vault_id=vault_id),
                              t0 + dt.timedelta(seconds=7))
    await eventually(lambda: _equal(associated(caller, policy.policy_id), []))
    await publish_vault_event(services, "cbr.vault.policy_associated", change(vault_id), t0 + dt.timedelta(seconds=6))
    await applied_so_far("cbr.vault.policy_associated")
    assert await associated(caller, policy.policy_id) == []

    # Events naming a policy of another project, or of the wrong type, bind nothing.
    foreign = change(str(uuid.uuid4()))
    foreign.project_id = "another-project"
    await publish_vault_event(services, "cbr.vault.policy_associated", foreign, t0 + dt.timedelta(seconds=8))
    await publish_vault_event(services, "cbr.vault.policy_associated",
                              change(str(uuid.uuid4()), operation_type="replication"), t0 + dt.timedelta(seconds=8))
    await applied_so_far("cbr.vault.policy_associated")
    assert await associated(caller, policy.policy_id) == []


async def _equal(awaitable, expected) -> bool:
    return await awaitable == expected



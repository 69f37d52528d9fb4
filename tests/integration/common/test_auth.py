"""The auth interceptor on a unary and a streaming method: tokens, roles and project scoping."""
from __future__ import annotations

import time
import uuid

import grpc
import jwt
import pytest

from cbr.backup.v1 import task_pb2 as tp
from cbr.policy.v1 import policy_pb2 as pol
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common.auth import issue_token
from tests.support.calls import create_vault, expect_error, vault_count
from tests.support.services import eventually

UNAUTH, DENIED, NOT_FOUND = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                             grpc.StatusCode.NOT_FOUND)


def bad_tokens(services, project_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "cbr", "sub": "mallory", "project_id": project_id, "roles": ["cbr_full_access"],
              "iat": now, "exp": now + 600}
    return {
        "no token": "",
        "garbage": "not-a-jwt",
        "forged signature": issue_token("another-secret-of-32-bytes-or-more!", project_id, "mallory", ["cbr_full_access"]),
        "alg none": jwt.encode(claims, key=None, algorithm="none"),
        "expired": issue_token(services.jwt_secret, project_id, "alice", ["cbr_full_access"], ttl_seconds=-10),
        "no project": jwt.encode({**claims, "project_id": ""}, services.jwt_secret, algorithm="HS256"),
        "roles not a list": jwt.encode({**claims, "roles": "cbr_full_access"}, services.jwt_secret,
                                       algorithm="HS256"),
    }


async def finished_task(services, caller) -> str:
    vault = await create_vault(caller)
    task_id = (await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))).task_id

    async def done():
        task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
        vaults = (await caller.vault.ListVaults(vp.ListVaultsRequest(vault_ids=[vault.vault_id]))).count
        return task.status == tp.TASK_STATUS_SUCCESS and vaults == 0
    await eventually(done)
    return task_id


async def watch(caller, task_id: str) -> list[tp.Task]:
    return [reply.task async for reply in caller.tasks.WatchTask(tp.WatchTaskRequest(task_id=task_id))]


@pytest.mark.parametrize("case", ["no token", "garbage", "forged signature", "alg none", "expired", "no project",
                                  "roles not a list"])
async def test_bad_tokens_are_unauthenticated(services, case):
    owner = services.caller()
    task_id = await finished_task(services, owner)
    intruder = services.caller(owner.project_id, token=bad_tokens(services, owner.project_id)[case])
    await expect_error(intruder.vault.ListVaults(vp.ListVaultsRequest()), UNAUTH)
    await expect_error(intruder.vault.CreateVault(vp.CreateVaultRequest(name="x", size_gb=1)), UNAUTH)
    await expect_error(watch(intruder, task_id), UNAUTH)
    assert await vault_count(owner) == 0


async def test_wrong_scheme_is_unauthenticated(services):
    caller = services.caller()
    raw = services.token(caller.project_id)
    stub_call = services.caller(caller.project_id).vault
    await expect_error(stub_call.ListVaults(vp.ListVaultsRequest(), metadata=(("authorization", raw),)), UNAUTH)


async def test_readonly_reads_but_cannot_write(services):
    owner = services.caller()
    vault = await create_vault(owner)
    task_id = await finished_task(services, owner)
    reader = services.caller(owner.project_id, roles=("cbr_readonly",))
    assert (await reader.vault.ListVaults(vp.ListVaultsRequest())).count == 1
    tasks = await watch(reader, task_id)
    assert tasks[-1].status == tp.TASK_STATUS_SUCCESS
    for call in (reader.vault.CreateVault(vp.CreateVaultRequest(name="x", size_gb=1)),
                 reader.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, name="y")),
                 reader.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id)),
                 reader.tasks.CancelTask(tp.CancelTaskRequest(task_id=task_id))):
        await expect_error(call, DENIED)
    assert (await owner.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.name == vault.name


async def test_backups_and_vaults_role_cannot_change_policies(services):
    operator = services.caller(roles=("cbr_backups_vaults_full_access",))
    vault = await create_vault(operator)  # vault writes are allowed
    assert vault.vault_id
    await expect_error(operator.policies.CreatePolicy(pol.CreatePolicyRequest(name="p")), DENIED)
    await expect_error(operator.policies.DeletePolicy(pol.DeletePolicyRequest(policy_id=str(uuid.uuid4()))), DENIED)
    full = services.caller(operator.project_id)
    # Full access passes the interceptor and reaches the policy service's own checks.
    await expect_error(full.policies.CreatePolicy(pol.CreatePolicyRequest(name="p")),
                       grpc.StatusCode.INVALID_ARGUMENT, "BackupService.6117")
    reader = services.caller(operator.project_id, roles=("cbr_readonly",))
    assert (await reader.policies.ListPolicies(pol.ListPoliciesRequest())).count == 0


async def test_unknown_role_is_denied(services):
    caller = services.caller(roles=("admin",))
    await expect_error(caller.vault.ListVaults(vp.ListVaultsRequest()), DENIED)


async def test_other_projects_objects_are_not_found(services):
    owner, stranger = services.caller(), services.caller()
    vault = await create_vault(owner)
    task_id = await finished_task(services, owner)
    for call in (stranger.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id)),
                 stranger.vault.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, name="mine")),
                 stranger.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id)),
                 stranger.tasks.GetTask(tp.GetTaskRequest(task_id=task_id)),
                 watch(stranger, task_id)):
        await expect_error(call, NOT_FOUND)
    assert (await stranger.vault.ListVaults(vp.ListVaultsRequest())).count == 0
    assert (await owner.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.name == vault.name


async def test_health_needs_no_token(services):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    for runtime in services.runtimes.values():
        async with grpc.aio.insecure_channel(runtime.address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

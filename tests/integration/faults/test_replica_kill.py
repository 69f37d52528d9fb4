"""Two processes of every service, clients balancing over them (cbr_common.channels, as the CLI and the services'
peers do), and one replica of each SIGKILLed under load: every read and every request_id'd CreateCheckpoint still
succeeds, and each request_id made exactly one checkpoint (counted in the database)."""
from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.policy.v1 import policy_pb2 as pol
from cbr.replication.v1 import replication_pb2 as rp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common import channels
from cbr_common.auth import issue_token
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.replicas import SERVICES, ReplicatedServices
from tests.support.services import STUBS, Caller, _Authed
from tests.support.stack import Infra

CLIENTS = 4
BEFORE_KILL = 24    # checkpoints made before the kill
AFTER_KILL = 48     # and after it
LOAD_TIMEOUT = 240.0
CALL_TIMEOUT = 20.0  # each call's deadline, its retries included


@pytest.fixture(scope="module")
def replica_infra():
    """A Postgres and NATS of this test alone: its checkpoints queue jobs no other test's workers should take."""
    infra = Infra.start()
    yield infra
    infra.stop()


def caller_over(stack: ReplicatedServices, jwt_secret: str) -> tuple[Caller, list]:
    project_id = f"project-{uuid.uuid4().hex[:12]}"
    token = issue_token(jwt_secret, project_id=project_id, subject="tester", roles=["cbr_full_access"],
                        ttl_seconds=900)
    metadata = (("authorization", f"Bearer {token}"),)
    opened = {service: channels.open_channel(stack.address(service)) for service in SERVICES}
    stubs = {name: _Authed(stub(opened[service]), metadata) for name, (stub, service) in STUBS.items()}
    return Caller(project_id, stubs), list(opened.values())


async def test_killing_one_replica_of_each_service_under_load_loses_no_call_and_doubles_nothing(
        replica_infra, capsys):
    stack = await asyncio.to_thread(ReplicatedServices.start, replica_infra, 2)
    caller, opened = caller_over(stack, replica_infra.jwt_secret)
    try:
        disk = await create_disk(caller, "replicated", 8 * MIB)
        vault = await create_vault(caller, "replicated", DISK, BACKUP, resources=[ref(disk)])
        made: dict[str, str] = {}   # request_id -> the checkpoint the call returned
        reads = 0
        kill_at: list[float] = []
        slowest_after_kill = 0.0

        async def client(n: int) -> None:
            nonlocal reads, slowest_after_kill
            i = 0
            while len(made) < BEFORE_KILL + AFTER_KILL:
                started = time.monotonic()
                request_id = f"replica-kill-{n}-{i}"
                got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id),
                                                   timeout=CALL_TIMEOUT)).vault
                assert got.vault_id == vault.vault_id
                checkpoint = (await caller.backups.CreateCheckpoint(
                    bp.CreateCheckpointRequest(vault_id=vault.vault_id, request_id=request_id),
                    timeout=CALL_TIMEOUT)).checkpoint
                made[request_id] = checkpoint.checkpoint_id
                again = (await caller.backups.GetCheckpoint(
                    bp.GetCheckpointRequest(checkpoint_id=checkpoint.checkpoint_id), timeout=CALL_TIMEOUT))
                assert again.checkpoint.checkpoint_id == checkpoint.checkpoint_id
                await caller.policies.ListPolicies(pol.ListPoliciesRequest(), timeout=CALL_TIMEOUT)
                await caller.replication.ListReplicationRecords(rp.ListReplicationRecordsRequest(),
                                                                timeout=CALL_TIMEOUT)
                reads += 4
                if kill_at and started >= kill_at[0] - 1.0:  # a round that may have met the dying replicas
                    slowest_after_kill = max(slowest_after_kill, time.monotonic() - started)
                i += 1

        async def killer() -> dict[str, float]:
            while len(made) < BEFORE_KILL:
                await asyncio.sleep(0.01)
            # Both replicas of each service took calls: the clients balance, they do not stick to one.
            served = {f"{r.name} {method}": await asyncio.to_thread(r.calls, method)
                      for service, method in (("vault", "GetVault"), ("backup", "CreateCheckpoint"),
                                              ("policy", "ListPolicies"), ("replication", "ListReplicationRecords"))
                      for r in stack.replicas[service]}
            kill_at.append(time.monotonic())
            for service in SERVICES:
                stack.replicas[service][0].kill()
            return served

        results = await asyncio.wait_for(asyncio.gather(killer(), *(client(n) for n in range(CLIENTS))),
                                         timeout=LOAD_TIMEOUT)
        served = results[0]
        assert all(count > 0 for count in served.values()), served
        assert all(stack.replicas[s][0].process.returncode == -9 for s in SERVICES)
        assert len(made) >= BEFORE_KILL + AFTER_KILL

        with psycopg.connect(replica_infra.postgres.conninfo()) as conn:
            rows = conn.execute("SELECT request_id, count(*), min(checkpoint_id) FROM backup.checkpoints "
                                "WHERE project_id = %s GROUP BY request_id", (caller.project_id,)).fetchall()
            backups_per_checkpoint = conn.execute(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM backup.backups WHERE project_id = %s "
                "GROUP BY checkpoint_id) AS per", (caller.project_id,)).fetchone()[0]
        assert {request_id: (count, cp_id) for request_id, count, cp_id in rows} == \
            {request_id: (1, cp_id) for request_id, cp_id in made.items()}
        assert backups_per_checkpoint == 1  # one disk: one backup per checkpoint, never two
    finally:
        for channel in opened:
            await channel.close()
        await asyncio.to_thread(stack.stop)
    with capsys.disabled():
        print(f"\n[measured] one of two replicas of each service SIGKILLed under {CLIENTS} clients: {len(made)} "
              f"checkpoints and {reads} reads, none failed; slowest round after the kill {slowest_after_kill:.2f} s")

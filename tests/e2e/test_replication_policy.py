"""A replication policy on two regions (`python -m cbr_devstack up-regions`) whose schedulers' clocks run 1,800 times
faster (CBR_SCHEDULER_CLOCK): its ticks replicate region A's backups into a replication vault of region B, B's
policy service trims those auto replicas to the policy's rule, a manual replica in the same vault stays, and
deleting the source backups in A deletes nothing in B (issue 12, "done means")."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2 as pp, protectable_pb2_grpc
from cbr.common.v1 import common_pb2 as cp
from cbr.policy.v1 import policy_pb2 as pol
from cbr.policy.v1 import policy_pb2_grpc
from cbr.replication.v1 import replication_pb2 as rp
from cbr.replication.v1 import replication_pb2_grpc
from cbr.vault.v1 import vault_pb2 as vp
from cbr.vault.v1 import vault_pb2_grpc
from tests.e2e.test_policy_schedules import HOURLY, read_env, wait_for

SPEED = 1800  # an hour every two seconds
KEEP = 2
QUIET = 5.0  # seconds a settled state must hold before it is judged
FINAL = (rp.REPLICATION_STATUS_SUCCESS, rp.REPLICATION_STATUS_FAILED, rp.REPLICATION_STATUS_CANCELLED,
         rp.REPLICATION_STATUS_SKIPPED)


def devstack(command: str, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=600, env=env)


class Region:
    """Blocking stubs of one region's public services, with its dev token (project "dev")."""

    def __init__(self, env: dict[str, str]):
        self.metadata = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
        backup, vault, policy, replication = (grpc.insecure_channel(env[f"CBR_{name}_ADDR"])
                                              for name in ("BACKUP", "VAULT", "POLICY", "REPLICATION"))
        self.channels = [backup, vault, policy, replication]
        self.protectables = protectable_pb2_grpc.ProtectableServiceStub(backup)
        self.backups = backup_pb2_grpc.BackupServiceStub(backup)
        self.vaults = vault_pb2_grpc.VaultServiceStub(vault)
        self.policies = policy_pb2_grpc.PolicyServiceStub(policy)
        self.replication = replication_pb2_grpc.ReplicationServiceStub(replication)

    def __call__(self, method, request):
        return method(request, metadata=self.metadata, timeout=30)

    def close(self):
        for channel in self.channels:
            channel.close()

    def backups_in(self, vault_id: str) -> list[bp.Backup]:
        return list(self(self.backups.ListBackups, bp.ListBackupsRequest(vault_id=vault_id)).backups)


@contextlib.contextmanager
def fast_regions(tmp_path: Path):
    root = tmp_path / "regions"
    clock = f"{dt.datetime.now(dt.timezone.utc).isoformat()}@{time.time():.3f}x{SPEED}"
    env = dict(os.environ, CBR_SCHEDULER_CLOCK=clock, CBR_SCHEDULER_INTERVAL_SECONDS="0.2")
    try:
        up = devstack("up-regions", root, env)
        assert up.returncode == 0, up.stdout + up.stderr
        a, b = (Region(read_env(root / name / "cbr.env")) for name in ("region-a", "region-b"))
        try:
            yield a, b
        finally:
            a.close()
            b.close()
    finally:
        down = devstack("down-regions", root)
        assert down.returncode == 0, down.stdout + down.stderr


def backup_now(a: Region, vault_id: str) -> str:
    """A manual backup of the vault's disk, available; its id."""
    checkpoint = wait_for(lambda: (lambda c: c if c.resources else None)(
        a(a.backups.CreateCheckpoint, bp.CreateCheckpointRequest(vault_id=vault_id)).checkpoint),
        60, "a checkpoint (the disk is busy while a backup runs)")
    backup_id = checkpoint.resources[0].backup_id
    wait_for(lambda: a(a.backups.GetBackup, bp.GetBackupRequest(backup_id=backup_id)).backup.status
             == bp.BACKUP_STATUS_AVAILABLE, 120, f"backup {backup_id} to be available")
    return backup_id


def record_of(a: Region, record_id: str) -> rp.ReplicationRecord:
    return a(a.replication.GetReplicationRecord,
             rp.GetReplicationRecordRequest(replication_record_id=record_id)).replication_record


def auto_replicas(b: Region, vault_id: str, policy_id: str) -> list[bp.Backup]:
    return [r for r in b.backups_in(vault_id) if r.auto_trigger and r.policy_id == policy_id
            and r.status == bp.BACKUP_STATUS_AVAILABLE]


def test_policy_ticks_replicate_and_b_trims_auto_replicas_only(tmp_path):
    with fast_regions(tmp_path) as (a, b):
        disk = a(a.protectables.CreateDisk, pp.CreateDiskRequest(name="replicated", size_bytes=2 << 20)).disk
        vault = a(a.vaults.CreateVault, vp.CreateVaultRequest(
            name="source", object_type=cp.OBJECT_TYPE_DISK, protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10,
            resources=[vp.ResourceRef(resource_id=disk.resource_id, type=cp.OBJECT_TYPE_DISK)])).vault
        sources = []
        for _ in range(4):
            with open(disk.path, "r+b") as f:
                f.write(os.urandom(256 << 10))
            sources.append(backup_now(a, vault.vault_id))
        target = b(b.vaults.CreateVault, vp.CreateVaultRequest(
            name="replicas", object_type=cp.OBJECT_TYPE_DISK, protect_type=vp.PROTECT_TYPE_REPLICATION,
            size_gb=10)).vault

        # A manual replica of the first backup, before any policy: never retention's to delete.
        manual = a(a.replication.ReplicateBackup, rp.ReplicateBackupRequest(
            backup_id=sources[0], destination_region="region-b", destination_project_id="dev",
            destination_vault_id=target.vault_id)).replication_record_id
        manual = wait_for(lambda: (lambda r: r if r.status in FINAL else None)(record_of(a, manual)),
                          180, "the manual replica")
        assert manual.status == rp.REPLICATION_STATUS_SUCCESS, manual.error

        policy = a(a.policies.CreatePolicy, pol.CreatePolicyRequest(
            name="to-b", operation_type=pol.OPERATION_TYPE_REPLICATION, trigger=pol.PolicyTrigger(patterns=[HOURLY]),
            operation_definition=pol.OperationDefinition(max_backups=KEEP, destination_region="region-b",
                                                         destination_project_id="dev"))).policy
        a(a.vaults.AssociatePolicy, vp.AssociatePolicyRequest(vault_id=vault.vault_id, policy_id=policy.policy_id,
                                                              destination_vault_id=target.vault_id))
        # The ticks replicate the three other backups as auto replicas of the policy; B keeps the newest two.
        records = wait_for(lambda: (lambda rs: rs if len(rs) >= 3 and all(r.status in FINAL for r in rs) else None)(
            [r for r in a(a.replication.ListReplicationRecords, rp.ListReplicationRecordsRequest(
                source_vault_id=vault.vault_id)).replication_records if r.policy_id == policy.policy_id]),
            180, "the policy's replicas of three backups")
        assert all(r.status == rp.REPLICATION_STATUS_SUCCESS and r.auto_trigger for r in records)
        assert {r.source_backup_id for r in records} == set(sources[1:])
        kept = wait_for(lambda: (lambda rs: rs if len(rs) == KEEP else None)(
            auto_replicas(b, target.vault_id, policy.policy_id)), 120, "B's retention to trim to two")
        assert all(r.image_type == bp.IMAGE_TYPE_REPLICATION and r.replicated_from.source_region == "region-a"
                   for r in kept)
        assert {r.replicated_from.source_backup_id for r in kept} < set(sources[1:])

        # A newer backup in A: the next tick replicates it, and B trims again, still sparing the manual replica.
        with open(disk.path, "r+b") as f:
            f.write(os.urandom(256 << 10))
        sources.append(backup_now(a, vault.vault_id))
        kept = wait_for(lambda: (lambda rs: rs if len(rs) == KEEP and sources[-1] in
                                 {r.replicated_from.source_backup_id for r in rs} else None)(
            auto_replicas(b, target.vault_id, policy.policy_id)), 180, "the newest backup's replica and a trim to two")
        a(a.policies.UpdatePolicy, pol.UpdatePolicyRequest(policy_id=policy.policy_id, enabled=False))
        # A tick already under way may still bring a record (a tick published before the disable is consumed
        # after it), then a replica, which B then trims: B is judged once, for QUIET seconds, A's records are all
        # final and unchanged and B holds the policy's two.
        def settled():
            records = a(a.replication.ListReplicationRecords,
                        rp.ListReplicationRecordsRequest(source_vault_id=vault.vault_id)).replication_records
            if not all(r.status in FINAL for r in records):
                return None
            if len(auto_replicas(b, target.vault_id, policy.policy_id)) != KEEP:
                return None
            return (sorted((r.replication_record_id, r.status) for r in records),
                    sorted(r.backup_id for r in b.backups_in(target.vault_id)))
        quiet_since, last = None, None
        deadline = time.monotonic() + 240
        while True:
            now_state = settled()
            if now_state is None or now_state != last:
                quiet_since, last = time.monotonic(), now_state
            elif time.monotonic() - quiet_since >= QUIET:
                break
            assert time.monotonic() < deadline, "A's replications to end and B to hold the policy's two, quietly"
            time.sleep(0.5)
        in_b = {r.backup_id: r for r in b.backups_in(target.vault_id)}
        assert manual.destination_backup_id in in_b
        assert not in_b[manual.destination_backup_id].auto_trigger
        assert in_b[manual.destination_backup_id].status == bp.BACKUP_STATUS_AVAILABLE

        # Deleting the source backups in A deletes nothing in B.
        for backup_id in sources:
            a(a.backups.DeleteBackup, bp.DeleteBackupRequest(backup_id=backup_id))
        wait_for(lambda: not a.backups_in(vault.vault_id), 120, "A's backups to be deleted")
        time.sleep(2.0)  # anything B would do in answer has had its chance
        after = {r.backup_id: r.status for r in b.backups_in(target.vault_id)}
        assert set(after) == set(in_b)
        assert all(status == bp.BACKUP_STATUS_AVAILABLE for status in after.values())

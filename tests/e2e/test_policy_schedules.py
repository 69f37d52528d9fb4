"""Policies on the real services, on an embedded stack whose scheduler clock runs 1,800-3,600 times faster
(CBR_SCHEDULER_CLOCK): a frequent policy creates backups through the work queue and retention trims them; two
scheduler processes (one killed with SIGKILL part-way) give exactly one checkpoint per fired tick."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2 as pp, protectable_pb2_grpc
from cbr.common.v1 import common_pb2 as cp
from cbr.policy.v1 import policy_pb2 as pol
from cbr.policy.v1 import policy_pb2_grpc
from cbr.vault.v1 import vault_pb2 as vp
from cbr.vault.v1 import vault_pb2_grpc
from cbr_devstack.ports import free_port

HOURLY = "FREQ=DAILY;INTERVAL=1;BYHOUR=" + ",".join(str(h) for h in range(24)) + ";BYMINUTE=0"


def devstack(command: str, run_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=240, env=env)


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


class Api:
    """Blocking stubs with the dev token."""

    def __init__(self, env: dict[str, str]):
        self.metadata = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
        backup = grpc.insecure_channel(env["CBR_BACKUP_ADDR"])
        self.channels = [backup, grpc.insecure_channel(env["CBR_VAULT_ADDR"]),
                         grpc.insecure_channel(env["CBR_POLICY_ADDR"])]
        self.protectables = protectable_pb2_grpc.ProtectableServiceStub(backup)
        self.backups = backup_pb2_grpc.BackupServiceStub(backup)
        self.vaults = vault_pb2_grpc.VaultServiceStub(self.channels[1])
        self.policies = policy_pb2_grpc.PolicyServiceStub(self.channels[2])

    def __call__(self, method, request):
        return method(request, metadata=self.metadata, timeout=20)

    def close(self):
        for channel in self.channels:
            channel.close()


@contextlib.contextmanager
def fast_stack(tmp_path: Path, speed: int, **extra_env):
    """An embedded stack whose scheduler's clock starts now and runs `speed` times faster."""
    run_dir = tmp_path / "run"
    clock = f"{dt.datetime.now(dt.timezone.utc).isoformat()}@{time.time():.3f}x{speed}"
    env = dict(os.environ, CBR_SCHEDULER_CLOCK=clock, CBR_SCHEDULER_INTERVAL_SECONDS="0.2", **extra_env)
    up = devstack("up", run_dir, env)
    assert up.returncode == 0, up.stderr
    api = Api(read_env(run_dir / "cbr.env"))
    try:
        yield run_dir, env, api
    finally:
        api.close()
        down = devstack("down", run_dir)
        assert down.returncode == 0, down.stdout + down.stderr


def disks_in_vault(api: Api, count: int, name: str) -> tuple[vp.Vault, list[pp.Protectable]]:
    disks = []
    for i in range(count):
        disk = api(api.protectables.CreateDisk, pp.CreateDiskRequest(name=f"{name}{i}", size_bytes=2 << 20)).disk
        with open(disk.path, "r+b") as f:
            f.write(os.urandom(256 << 10))
        disks.append(disk)
    vault = api(api.vaults.CreateVault, vp.CreateVaultRequest(
        name=name, object_type=cp.OBJECT_TYPE_DISK, protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10,
        resources=[vp.ResourceRef(resource_id=d.resource_id, type=cp.OBJECT_TYPE_DISK) for d in disks])).vault
    return vault, disks


def hourly_policy(api: Api, name: str, **definition) -> pol.Policy:
    return api(api.policies.CreatePolicy, pol.CreatePolicyRequest(
        name=name, operation_type=pol.OPERATION_TYPE_BACKUP, trigger=pol.PolicyTrigger(patterns=[HOURLY]),
        operation_definition=pol.OperationDefinition(**definition))).policy


def associate(api: Api, vault_id: str, policy_id: str) -> None:
    api(api.vaults.AssociatePolicy, vp.AssociatePolicyRequest(vault_id=vault_id, policy_id=policy_id))


def ticks(api: Api, policy_id: str) -> list[pol.Tick]:
    return list(api(api.policies.ListTicks, pol.ListTicksRequest(policy_id=policy_id)).ticks)


def auto_backups(api: Api, vault_id: str, statuses=()) -> list[bp.Backup]:
    found = api(api.backups.ListBackups, bp.ListBackupsRequest(vault_id=vault_id, status=statuses)).backups
    return [b for b in found if b.auto_trigger]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_frequent_policy_backs_up_and_retention_trims(tmp_path):
    with fast_stack(tmp_path, speed=1800) as (_, _, api):  # an hour every two seconds
        vault, _ = disks_in_vault(api, 1, "scheduled")
        policy = hourly_policy(api, "every-hour", max_backups=2)
        associate(api, vault.vault_id, policy.policy_id)
        fired = wait_for(lambda: [t for t in ticks(api, policy.policy_id) if t.status == pol.TICK_STATUS_FIRED]
                         if sum(t.status == pol.TICK_STATUS_FIRED for t in ticks(api, policy.policy_id)) >= 5
                         else None, 60, "five fired ticks")
        # Every fired tick made a checkpoint; retention keeps the newest two automatic backups.
        assert all(t.checkpoint_id for t in fired)
        kept = wait_for(lambda: (lambda b: b if len(b) <= 2 else None)(
            auto_backups(api, vault.vault_id, [bp.BACKUP_STATUS_AVAILABLE])), 30, "retention to trim to two")
        everything = {t.checkpoint_id for t in ticks(api, policy.policy_id) if t.checkpoint_id}
        assert {b.checkpoint_id for b in kept} <= everything
        preview = api(api.policies.PreviewRetention, pol.PreviewRetentionRequest(vault_id=vault.vault_id))
        assert preview.keep_count <= 2 + 1  # the newest is also kept while the next backup runs
        assert all("max_backups" in d.reasons or "newest_protected" in d.reasons
                   for d in preview.decisions if d.keep)
        # A manual backup is never retention's to delete, however many automatic ones follow.
        manual = wait_for(lambda: (lambda cp: cp if cp.resources else None)(api(
            api.backups.CreateCheckpoint, bp.CreateCheckpointRequest(vault_id=vault.vault_id)).checkpoint),
            30, "a manual checkpoint (the disk is busy while a scheduled backup runs)")
        before = len([t for t in ticks(api, policy.policy_id) if t.status == pol.TICK_STATUS_FIRED])
        wait_for(lambda: len([t for t in ticks(api, policy.policy_id) if t.status == pol.TICK_STATUS_FIRED])
                 >= before + 3, 60, "three more automatic backups")
        time.sleep(1.0)  # their retention runs
        backups = api(api.backups.ListBackups, bp.ListBackupsRequest(vault_id=vault.vault_id)).backups
        assert manual.resources[0].backup_id in {b.backup_id for b in backups}
        api(api.policies.UpdatePolicy, pol.UpdatePolicyRequest(policy_id=policy.policy_id, enabled=False))


def test_two_schedulers_one_killed_give_one_checkpoint_per_tick(tmp_path):
    with fast_stack(tmp_path, speed=3600, CBR_SCHEDULER_FIRING_LEASE_SECONDS="2") as (run_dir, env, api):
        stack_env = read_env(run_dir / "cbr.env")
        state = json.loads((run_dir / "stack.json").read_text())
        second_env = dict(env, **stack_env, CBR_JWT_SECRET=state["jwt_secret"],
                          CBR_LISTEN_ADDR=f"127.0.0.1:{free_port()}", CBR_POOL_DIR=str(run_dir / "pool"),
                          CBR_FS_ROOT=str(run_dir / "fs"))
        second = subprocess.Popen([sys.executable, "-m", "cbr_policy"], env=second_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            vaults = [disks_in_vault(api, 1, f"v{i}")[0] for i in range(4)]
            policy = hourly_policy(api, "busy")
            for vault in vaults:
                associate(api, vault.vault_id, policy.policy_id)
            wait_for(lambda: len(ticks(api, policy.policy_id)) >= 8, 60, "the first ticks")
            second.send_signal(signal.SIGKILL)  # one scheduler dies mid-stride; the stack's own goes on
            second.wait(10)
            time.sleep(6)  # six more simulated hours
            api(api.policies.UpdatePolicy, pol.UpdatePolicyRequest(policy_id=policy.policy_id, enabled=False))
            settled = wait_for(lambda: (lambda ts: ts if all(t.status != pol.TICK_STATUS_FIRING for t in ts)
                                        else None)(ticks(api, policy.policy_id)), 30, "every tick to settle")
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        by_vault: dict[str, list] = {}
        for t in settled:
            by_vault.setdefault(t.vault_id, []).append(t)
        for vault_id, recorded in by_vault.items():
            hours = sorted(t.scheduled_time.ToDatetime() for t in recorded)
            assert len(hours) == len(set(hours)), "a tick was recorded twice"
            assert all(b - a == dt.timedelta(hours=1) for a, b in zip(hours, hours[1:])), "an hour went missing"
        fired = [t for t in settled if t.status == pol.TICK_STATUS_FIRED]
        assert len(fired) >= 8
        assert len({t.checkpoint_id for t in fired}) == len(fired)  # one checkpoint per fired tick
        made = set()
        for vault in vaults:
            made |= {b.checkpoint_id for b in auto_backups(api, vault.vault_id)}
        assert made == {t.checkpoint_id for t in fired}  # and no checkpoint without its tick

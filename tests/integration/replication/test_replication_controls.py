"""Replication controls through the public APIs of two real regions (DESIGN.md 17.11): a replication's pace, bad
paces refused before anything is recorded, and at most max_concurrent replications to one destination region, a
killed worker's slot freeing with its lease."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import signal

import grpc

from cbr.backup.v1 import task_pb2 as tp
from cbr.replication.v1 import replication_pb2 as rp
from tests.integration.replication.test_replication_e2e import finished, replicate
from tests.support.backups import backup_now, disk_path, fill, wait_task
from tests.support.calls import BACKUP, DISK, MIB, REPLICATION, create_disk, create_vault, expect_error, ref
from tests.support.regions import REGION_B
from tests.support.services import eventually
from tests.support.workers import without_shared_workers, worker_processes

MB = 1_000_000
MALFORMED = "ReplicationService.6911"


async def full_disk_backup(caller, name: str, seed: int, mib: int = 8):
    """A vault with one disk of `mib` random MiBs, and its backup."""
    disk = await create_disk(caller, name, mib * MIB)
    fill(await disk_path(caller, disk.resource_id), 0, mib, seed=seed)
    vault = await create_vault(caller, name, DISK, BACKUP, resources=[ref(disk)])
    return vault, await backup_now(caller, vault.vault_id)


async def test_a_rate_limited_replication_is_paced_by_its_bucket(two_regions):
    caller, caller_b = two_regions.a.caller(), two_regions.b.caller()
    _, backup = await full_disk_backup(caller, "paced", seed=901)
    target = await create_vault(caller_b, "paced-replicas", DISK, REPLICATION)

    answer = await replicate(caller, backup.backup_id, caller_b, target.vault_id, rate_limit_mbps=4)
    record = await finished(caller, answer.replication_record_id)
    assert record.status == rp.REPLICATION_STATUS_SUCCESS, record.error
    assert record.rate_limit_mbps == 4
    assert record.source_manifest_digest == record.replica_manifest_digest
    info = (await wait_task(caller, record.task_id)).extra_info
    # The bucket's own accounting: every chunk byte on the wire went through it at 4 MB/s, and 8 MiB is more than
    # its one-second burst, so it made the sender wait.
    assert info["rate_limit_bytes_per_second"] == str(4 * MB)
    sent = record.counters.chunk_bytes_sent + record.counters.resent_bytes
    assert sent >= 8 * MIB and int(info["paced_bytes"]) == sent == record.transferred_bytes
    assert int(info["throttle_waits"]) >= 1 and int(info["throttle_wait_ms"]) > 0
    assert info["slot_waits"] == "0"


async def test_bad_rate_limits_are_refused_before_anything_is_recorded(two_regions):
    caller, caller_b = two_regions.a.caller(), two_regions.b.caller()
    vault, backup = await full_disk_backup(caller, "badpace", seed=902, mib=1)
    target = await create_vault(caller_b, "badpace-replicas", DISK, REPLICATION)
    for value in (-1.0, -0.001, math.nan, math.inf, 2e6):
        await expect_error(replicate(caller, backup.backup_id, caller_b, target.vault_id, rate_limit_mbps=value),
                           grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)
        await expect_error(caller.replication.ReplicateCheckpoint(rp.ReplicateCheckpointRequest(
            vault_id=vault.vault_id, destination_region=REGION_B, destination_project_id=caller_b.project_id,
            destination_vault_id=target.vault_id, rate_limit_mbps=value, request_id="bad-pace")),
            grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)
    listed = await caller.replication.ListReplicationRecords(rp.ListReplicationRecordsRequest(
        source_vault_id=vault.vault_id))
    assert listed.count == 0


def one_slot_directory(services, path, **changes):
    """Region A's directory as the session wrote it, with one slot to region-b (and changes), for the test's own
    workers."""
    directory = json.loads((services.infra.base / "regions.json").read_text())
    directory["peers"][0].update(max_concurrent=1, **changes)
    path.write_text(json.dumps(directory))
    return str(path)


async def test_one_slot_to_a_region_runs_its_replications_one_at_a_time(two_regions, tmp_path):
    a, caller, caller_b = two_regions.a, two_regions.a.caller(), two_regions.b.caller()
    one_slot = one_slot_directory(a, tmp_path / "regions.json", rate_limit_mbps=3)  # and the pair's pace, 3 MB/s
    backups = [(await full_disk_backup(caller, f"slot{i}", seed=910 + i))[1] for i in range(2)]
    target = await create_vault(caller_b, "slot-replicas", DISK, REPLICATION)

    async with without_shared_workers(a):
        with worker_processes(a, count=2, CBR_REGIONS_FILE=one_slot):
            # Paced (8 MiB at 1 or 2 MB/s: several seconds each, so the second worker process is up and holds the
            # other task while the first sends) so that both tasks run at once while one waits for the slot.
            answers = await asyncio.gather(*(replicate(caller, b.backup_id, caller_b, target.vault_id,
                                                       rate_limit_mbps=limit) for b, limit in zip(backups, (1, 2))))
            records = [await finished(caller, r.replication_record_id) for r in answers]
            tasks = [await wait_task(caller, r.task_id) for r in records]
    assert [r.status for r in records] == [rp.REPLICATION_STATUS_SUCCESS] * 2, [r.error for r in records]
    first, second = sorted(tasks, key=lambda t: t.extra_info["slot_taken_time"])
    # Two workers held the two tasks at once (both RUNNING)...
    assert second.started_time.ToDatetime() < first.ended_time.ToDatetime()
    # ...but the second sent nothing before the first ended: it took the slot after, having waited for it.
    taken = dt.datetime.fromisoformat(second.extra_info["slot_taken_time"]).replace(tzinfo=None)
    assert taken >= first.ended_time.ToDatetime()
    assert int(second.extra_info["slot_waits"]) >= 1 and first.extra_info["slot_waits"] == "0"
    assert "waiting" not in second.extra_info
    # Each ran alone to region-b, at the record's limit where it is below the pair's 3 MB/s.
    rates = {r.task_id: r.rate_limit_mbps for r in records}
    for task in tasks:
        expected = int(rates[task.task_id]) * MB
        assert task.extra_info["rate_limit_bytes_per_second"] == str(expected)
        assert int(task.extra_info["throttle_waits"]) >= 1


async def test_a_killed_workers_slot_frees_with_its_lease(two_regions, tmp_path):
    a, caller, caller_b = two_regions.a, two_regions.a.caller(), two_regions.b.caller()
    one_slot = one_slot_directory(a, tmp_path / "regions.json")
    backups = [(await full_disk_backup(caller, f"killslot{i}", seed=920 + i))[1] for i in range(2)]
    target = await create_vault(caller_b, "killslot-replicas", DISK, REPLICATION)

    async with without_shared_workers(a):
        with worker_processes(a, count=1, CBR_REGIONS_FILE=one_slot) as [victim]:
            slow = await replicate(caller, backups[0].backup_id, caller_b, target.vault_id, rate_limit_mbps=1)

            async def sending():  # the victim holds the region's only slot
                record = (await caller.replication.GetReplicationRecord(rp.GetReplicationRecordRequest(
                    replication_record_id=slow.replication_record_id))).replication_record
                if not record.task_id:
                    return False
                task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=record.task_id))).task
                return "slot_taken_time" in task.extra_info
            await eventually(sending, timeout=60, interval=0.1)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            with worker_processes(a, count=1, CBR_REGIONS_FILE=one_slot):
                other = await replicate(caller, backups[1].backup_id, caller_b, target.vault_id)
                records = [await finished(caller, r.replication_record_id) for r in (slow, other)]
    # The dead worker's mark stopped counting with its lease: both ran, the killed one again from where it was.
    assert [r.status for r in records] == [rp.REPLICATION_STATUS_SUCCESS] * 2, [r.error for r in records]
    killed = await wait_task(caller, records[0].task_id)
    assert killed.extra_info["attempts"] == "2"

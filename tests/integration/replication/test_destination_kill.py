"""The destination's transfer server killed (SIGKILL) half way through a replication and started again on the same
address (issue 12, "done means"; services/backup/DESIGN.md 17.8): the source waits for it within the attempt and the
same transfer resumes, so the same record ends SUCCESS with equal digests, what went again stays within the bound,
no partial replica is ever listed in B, and the replica restores byte-exact there.

Region B's transfer server is a `python -m cbr_backup` process on B's database, NATS and store (so it can be
killed); region A's worker in this test reaches it through a copy of A's region directory naming that process."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psycopg

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.replication.v1 import replication_pb2 as rp
from cbr_backup.adapters.chunk_index import libpq_url
from cbr_devstack.ports import free_port
from tests.integration.replication.test_replicate_job import half_way, wire_bytes
from tests.integration.replication.test_replication_e2e import finished, replicate
from tests.support.backups import backup_now, disk_path, fill, new_disk_from, sha256_file
from tests.support.calls import BACKUP, DISK, MIB, REPLICATION, create_disk, create_vault, ref
from tests.support.regions import REGION_B
from tests.support.workers import without_shared_workers

SIZE_MIB = 48           # random: every block a chunk of its full size, all of it to send
RATE_LIMIT_MBPS = 8     # the source worker's pace: the transfer lasts seconds, long enough to kill B within it
RESEND_BOUND = 64 * MIB  # issue 12 item 5; DESIGN.md 17.8 bounds it tighter (the 48 MiB window, two batches)


class TransferServerProcess:
    """Region B's backup service as a process of its own, its RegionTransferService on `transfer_addr`."""

    def __init__(self, region, log_path):
        self.region = region
        self.transfer_addr = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        peers = {f"CBR_{name.upper()}_ADDR": addr for name, addr in self.region.peers.items() if name != "backup"}
        return self.region.worker_env(CBR_LISTEN_ADDR="127.0.0.1:0", CBR_TRANSFER_LISTEN_ADDR=self.transfer_addr,
                                      CBR_OUTBOX_POLL_SECONDS="0.2", CBR_SCHEDULER_INTERVAL_SECONDS="0", **peers)

    async def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cbr_backup"], env=self.env(),
                                         stdout=subprocess.DEVNULL, stderr=log)
        host, port = self.transfer_addr.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the transfer server exited: {self.log_path.read_text()[-2000:]}"
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
                return
            assert time.monotonic() < deadline, "the transfer server did not listen in time"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def directory_naming(region, transfer_addr: str, path) -> str:
    """A copy of the region's directory whose destination (region B) is served at transfer_addr."""
    directory = json.loads(open(region.extra["regions_file"]).read())
    for peer in directory["peers"]:
        if peer["name"] == REGION_B:
            peer["transfer_addr"] = transfer_addr
    path.write_text(json.dumps(directory))
    return str(path)


class ListingWatch:
    """Polls B's ListBackups of the target vault while the replication runs: every backup ever listed."""

    def __init__(self, caller_b, vault_id: str):
        self.caller_b, self.vault_id = caller_b, vault_id
        self.seen: list[bp.Backup] = []
        self.polls = 0
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # B's in-process API answers throughout; a slow call is skipped
                listed = await self.caller_b.backups.ListBackups(bp.ListBackupsRequest(vault_id=self.vault_id))
                self.seen.extend(listed.backups)
                self.polls += 1
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_killed_destination_resumes_the_same_transfer(two_regions, tmp_path):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    disk = await create_disk(caller, "disk-kill", SIZE_MIB * MIB)
    fill(disk.path, 0, SIZE_MIB, seed=901)
    vault = await create_vault(caller, "vault-kill", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    source_sha = sha256_file(await disk_path(caller, disk.resource_id))
    lacked = wire_bytes(a.infra, vault.vault_id)  # B holds nothing of this vault
    target = await create_vault(caller_b, "replicas-kill", DISK, REPLICATION)

    server = TransferServerProcess(b, tmp_path / "b-backup.log")
    regions_file = directory_naming(a, server.transfer_addr, tmp_path / "regions.json")
    times: dict[str, float] = {}
    try:
        await server.start()
        async with without_shared_workers(a):
            # The worker reads its directory once, at start: this one names the process.
            await a.start_worker(rate_limit_mbps=RATE_LIMIT_MBPS, regions_file=regions_file)
            watch = ListingWatch(caller_b, target.vault_id)
            try:
                times["start"] = time.monotonic()
                record_id = (await replicate(caller, backup.backup_id, caller_b, target.vault_id)
                             ).replication_record_id
                task_id = await task_of(caller, record_id)
                at_kill = await half_way(caller, task_id, fraction=0.45)
                transfer_at_kill = transfer_of(a, task_id)
                times["kill"] = time.monotonic()
                server.kill()
                await server.start()  # the same address; well within the sender's patience (30 s)
                times["restarted"] = time.monotonic()
                done = await finished(caller, record_id, timeout=240)
                times["end"] = time.monotonic()
                listed_during = await poll_count(watch)
            finally:
                await watch.stop()
    finally:
        server.stop()

    assert done.status == rp.REPLICATION_STATUS_SUCCESS, done.error
    assert done.task_id == task_id
    task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
    assert task.status == tp.TASK_STATUS_SUCCESS
    assert transfer_at_kill and task.extra_info["transfer_id"] == transfer_at_kill  # resumed, not begun anew
    assert done.source_manifest_digest and done.source_manifest_digest == done.replica_manifest_digest
    # First sends are exactly what B lacked; what went again after the kill is within the bound.
    assert (done.counters.chunk_bytes_sent, done.counters.chunks_sent) == (sum(lacked.values()), len(lacked))
    assert done.counters.resent_bytes <= RESEND_BOUND
    assert done.transferred_bytes == done.counters.chunk_bytes_sent + done.counters.resent_bytes
    # Nothing was listed in B before the commit but the finished replica itself.
    assert listed_during > 0
    assert {(r.backup_id, r.status) for r in watch.seen} <= {(done.destination_backup_id, bp.BACKUP_STATUS_AVAILABLE)}
    [replica] = (await caller_b.backups.ListBackups(bp.ListBackupsRequest(vault_id=target.vault_id))).backups
    assert replica.backup_id == done.destination_backup_id and replica.status == bp.BACKUP_STATUS_AVAILABLE
    restored = await new_disk_from(caller_b, replica.backup_id)
    assert sha256_file(await disk_path(caller_b, restored)) == source_sha

    print(f"\ndestination kill: {SIZE_MIB} MiB at {RATE_LIMIT_MBPS} MB/s; killed at {at_kill.bytes_done / MIB:.1f} of "
          f"{at_kill.bytes_total / MIB:.1f} MiB after {times['kill'] - times['start']:.1f} s; back after "
          f"{times['restarted'] - times['kill']:.1f} s; done after {times['end'] - times['start']:.1f} s; "
          f"sent {done.counters.chunk_bytes_sent} B, resent {done.counters.resent_bytes} B "
          f"({done.counters.resent_bytes / MIB:.2f} MiB); {listed_during} listings polled")


def transfer_of(region, task_id: str) -> str:
    """The destination's transfer the source's job row names."""
    with psycopg.connect(libpq_url(region.infra.postgres.url)) as conn:
        [(transfer_id,)] = conn.execute("SELECT transfer_id FROM backup.replication_jobs WHERE task_id = %s",
                                        (task_id,)).fetchall()
    return transfer_id


async def task_of(caller, record_id: str, timeout: float = 60.0) -> str:
    """The record's replication task, once the backup service has made it."""
    deadline = time.monotonic() + timeout
    while True:
        record = (await caller.replication.GetReplicationRecord(
            rp.GetReplicationRecordRequest(replication_record_id=record_id))).replication_record
        if record.task_id:
            return record.task_id
        assert time.monotonic() < deadline, f"record {record_id} has no task"
        await asyncio.sleep(0.05)


async def poll_count(watch: ListingWatch) -> int:
    """How many listings the watch made; one more after the end, so the finished replica is seen too."""
    polls = watch.polls
    while watch.polls == polls:
        await asyncio.sleep(0.05)
    return watch.polls

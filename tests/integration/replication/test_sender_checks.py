"""What region A's replication job does when the destination misbehaves, against a stand-in RegionTransferService
served over real gRPC (services/backup/DESIGN.md 17.6): a chunk rejected as damaged is sent once more and counted
as re-sent; rejected twice, the task fails with 6953; a chunk id outside the transfer's manifests is never served
(6959), and the transfer is aborted."""
from __future__ import annotations

import json
import uuid

import grpc
import pytest

from cbr.backup.v1 import task_pb2 as tp
from cbr.replication.v1 import replication_pb2 as rpb
from cbr.replication.v1 import replication_pb2_grpc
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.datapath.manifest_delta import apply_delta
from cbr_devstack.ports import free_port
from tests.integration.replication.test_replicate_job import Updates, request, wire_bytes
from tests.support.backups import backup_now, disk_in_vault, wait_task
from tests.support.calls import MIB
from tests.support.regions import REGION_B
from tests.support.workers import without_shared_workers, worker_processes


class StandInPeer(replication_pb2_grpc.RegionTransferServiceServicer):
    """Holds nothing, wants every chunk the manifests name; `mode` says how it misbehaves."""

    def __init__(self, mode: str):
        self.mode = mode
        self.named: set[bytes] = set()
        self.copies: dict[bytes, int] = {}
        self.aborted: list[str] = []
        self.begins = 0

    async def BeginTransfer(self, request, context):
        self.begins += 1
        if self.mode == "down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the region is down")
        return rpb.BeginTransferResponse(transfer_id="transfer-1", namespace_known=True)

    async def PutManifests(self, request_iterator, context):
        data = {}
        async for part in request_iterator:
            data[part.source_backup_id] = data.get(part.source_backup_id, b"") + part.data
        for delta in data.values():
            manifest = DiskManifest.decode(apply_delta(delta, None))
            self.named.update(manifest.unique_ids())
        return rpb.PutManifestsResponse()

    async def ListWantedChunks(self, request, context):
        ids = sorted(self.named) if self.mode != "outside" else [bytes(32)]
        return rpb.ListWantedChunksResponse(chunk_ids=[i for i in ids if i > request.after_id], done=True)

    async def PutDictionary(self, request, context):
        return rpb.PutDictionaryResponse()

    async def PutChunks(self, request_iterator, context):
        async for message in request_iterator:
            rejected = []
            for chunk in message.chunks:
                self.copies[chunk.chunk_id] = self.copies.get(chunk.chunk_id, 0) + 1
                if self.mode == "reject_always" or (self.mode == "reject_first" and self.copies[chunk.chunk_id] == 1):
                    rejected.append(rpb.RejectedChunk(chunk_id=chunk.chunk_id, code="RegionTransferService.6953",
                                                      message="a byte flipped on the way"))
            yield rpb.PutChunksAck(durable_through_seq=message.seq, rejected=rejected)

    async def CommitTransfer(self, request, context):
        return rpb.CommitTransferResponse(backup_id=str(uuid.uuid4()), replica=list(request.expected))

    async def AbortTransfer(self, request, context):
        self.aborted.append(request.transfer_id)
        return rpb.AbortTransferResponse()


@pytest.fixture
async def updates(two_regions):
    seen = Updates()
    sub = await two_regions.a.runtimes["backup"].nats.subscribe("cbr.backup.>", cb=seen.on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def replicate_to_stand_in(two_regions, updates, tmp_path, mode: str, seed: int, **worker_env):
    """A backup of region A replicated to a stand-in for region B: (the stand-in, the task, A's wire sizes, the
    record id)."""
    a = two_regions.a
    peer = StandInPeer(mode)
    server = grpc.aio.server()
    replication_pb2_grpc.add_RegionTransferServiceServicer_to_server(peer, server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    (tmp_path / "peer.token").write_text("token\n")
    (tmp_path / "regions.json").write_text(json.dumps({"dev_plaintext": True, "peers": [
        {"name": REGION_B, "transfer_addr": addr, "credential_file": str(tmp_path / "peer.token")}]}))
    try:
        caller = a.caller()
        _, vault = await disk_in_vault(caller, 8 * MIB, seed=seed)
        backup = await backup_now(caller, vault.vault_id)
        async with without_shared_workers(a):
            with worker_processes(a, 1, CBR_REGIONS_FILE=tmp_path / "regions.json", **worker_env):
                record_id = await request(a, caller, backup, "project-b", str(uuid.uuid4()))
                task = await wait_task(caller, (await updates.wait(record_id, "created")).task_id, timeout=120)
        return peer, task, wire_bytes(a.infra, vault.vault_id), record_id
    finally:
        await server.stop(1.0)


async def test_a_chunk_rejected_once_goes_again_and_counts_as_resent(two_regions, updates, tmp_path):
    peer, task, sizes, record_id = await replicate_to_stand_in(two_regions, updates, tmp_path, "reject_first", 360)
    assert task.status == tp.TASK_STATUS_SUCCESS, task
    assert set(peer.copies.values()) == {2}
    done = await updates.wait(record_id, "completed")
    assert done.counters.chunk_bytes_sent == done.counters.resent_bytes == sum(sizes.values())


async def test_a_chunk_rejected_twice_fails_the_task(two_regions, updates, tmp_path):
    peer, task, _, record_id = await replicate_to_stand_in(two_regions, updates, tmp_path, "reject_always", 361)
    assert (task.status, task.error.code) == (tp.TASK_STATUS_FAILED, "ReplicationService.6953")
    assert max(peer.copies.values()) == 2 and peer.aborted == ["transfer-1"]
    assert (await updates.wait(record_id, "failed")).error_code == "ReplicationService.6953"


async def test_a_chunk_outside_the_manifests_is_never_served(two_regions, updates, tmp_path):
    peer, task, _, record_id = await replicate_to_stand_in(two_regions, updates, tmp_path, "outside", 362)
    assert (task.status, task.error.code) == (tp.TASK_STATUS_FAILED, "ReplicationService.6959")
    assert peer.copies == {} and peer.aborted == ["transfer-1"]
    assert (await updates.wait(record_id, "failed")).error_code == "ReplicationService.6959"


async def test_an_unreachable_destination_fails_each_attempt_then_the_record(two_regions, updates, tmp_path):
    """Past CBR_REPLICATION_PEER_PATIENCE_SECONDS of UNAVAILABLE an attempt ends (the record hears `retrying`),
    the next begins the transfer again, and the last fails the task (and the record hears `failed`) with 6920."""
    peer, task, _, record_id = await replicate_to_stand_in(
        two_regions, updates, tmp_path, "down", 363, CBR_REPLICATION_PEER_PATIENCE_SECONDS="1", CBR_JOB_ATTEMPTS="2")
    assert (task.status, task.error.code) == (tp.TASK_STATUS_FAILED, "ReplicationService.6920")
    failed = await updates.wait(record_id, "failed")
    assert (failed.error_code, failed.attempt) == ("ReplicationService.6920", 2)
    retrying = updates.of(record_id, "retrying")
    assert [(u.attempt, u.error_code) for u in retrying] == [(1, "ReplicationService.6920")]
    assert [u.attempt for u in updates.of(record_id, "started")] == [1, 2]
    assert peer.begins >= 2 and peer.copies == {}

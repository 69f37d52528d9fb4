"""The destination side of replication over gRPC, driven as a source region would drive it (DESIGN.md 17.5-17.8):
chunks and manifests are made here with the data path's codec from a random source id key; the replica is then
restored through the public BackupService, byte for byte. Every refusal has its RegionTransferService code and
writes nothing."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import stat
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
import zstandard

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.replication.v1 import replication_pb2 as rp
from cbr.replication.v1 import replication_pb2_grpc
from cbr_backup.adapters.chunk_index import ChunkIndex, MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys, chunk_id, dictionary_tag
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.datapath.manifest_delta import encode_delta, manifest_digest, namespace_key_check
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.tree_backup import backup_tree
from cbr_backup.transfer.chunks import ChunkSink
from cbr_common.auth import issue_token
from cbr_common.regions import issue_peer_token
from tests.support.backups import disk_path, new_disk_from, wait_success
from tests.support.calls import DISK, REPLICATION, SERVER, TURBO, create_vault, expect_error

BLOCK = 128 * 1024
DISK_SIZE = 4 * 1024 * 1024
SOURCE = "region-a"
DENIED, NOT_FOUND = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
FAILED, INVALID = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT


@dataclasses.dataclass
class Destination:
    """Region-b of the two regions: its backup service serves RegionTransferService to region-a."""
    services: object

    @property
    def infra(self):
        return self.services.infra

    def caller(self):
        return self.services.caller()

    def stub(self, token: str | None = None) -> "Peer":
        token = token or issue_peer_token(self.services.jwt_secret, SOURCE, 600)
        return Peer(replication_pb2_grpc.RegionTransferServiceStub(self.services.channels["backup"]),
                    (("authorization", f"Bearer {token}"),))


@pytest.fixture
def destination(two_regions):
    return Destination(two_regions.b)


class Peer:
    """RegionTransferService as a source region's worker calls it."""

    def __init__(self, stub, metadata):
        self.stub, self.metadata = stub, metadata

    def call(self, method: str, request):
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=30)

    async def manifests(self, requests: list[rp.PutManifestsRequest]) -> rp.PutManifestsResponse:
        return await self.stub.PutManifests(iter(requests), metadata=self.metadata, timeout=30)

    async def wanted(self, transfer_id: str, limit: int = 5) -> tuple[list[bytes], rp.ListWantedChunksResponse]:
        """Every wanted id, page by page (small pages, so paging is exercised); and the first page."""
        ids, after, first = [], b"", None
        while True:
            page = await self.call("ListWantedChunks", rp.ListWantedChunksRequest(
                transfer_id=transfer_id, after_id=after, limit=limit))
            first = first or page
            ids += list(page.chunk_ids)
            if page.done:
                return ids, first
            after = page.chunk_ids[-1]

    async def chunks(self, transfer_id: str, messages: list[list[rp.WireChunk]]) -> list[rp.PutChunksAck]:
        requests = [rp.PutChunksRequest(transfer_id=transfer_id, seq=seq, chunks=chunks)
                    for seq, chunks in enumerate(messages, 1)]
        call = self.stub.PutChunks(iter(requests), metadata=self.metadata, timeout=30)
        return [ack async for ack in call]


class SourceDisk:
    """A disk image as region-a's vault would hold it: chunks keyed with the source vault's id key, the compressible
    ones compressed against a dictionary, and its manifest."""

    def __init__(self, seed: int, id_key: bytes | None = None, image: bytearray | None = None):
        self.rng = random.Random(seed)
        self.id_key = id_key or os.urandom(32)
        self.dictionary = b"".join(f"dictionary line {i} of the source vault\n".encode() for i in range(3000))
        self.dictionary_id = chunk_id(self.dictionary, self.id_key)
        self.tag = dictionary_tag(self.dictionary_id)
        self.codec = ChunkCodec(VaultKeys(self.id_key), dictionary=(self.tag, self.dictionary),
                                dictionaries=lambda tag: self.dictionary)
        self.image = image if image is not None else self._image()
        self.vault_id = str(uuid.uuid4())
        self.resource_id = str(uuid.uuid4())

    def _image(self) -> bytearray:
        image = bytearray(DISK_SIZE)
        for block in range(DISK_SIZE // BLOCK):
            kind = block % 4
            if kind == 1:  # random: crosses bare
                image[block * BLOCK:(block + 1) * BLOCK] = self.rng.randbytes(BLOCK)
            elif kind == 2:  # text: crosses as a DICT zstd frame
                text = "".join(f"dictionary line {self.rng.randrange(3000)} of the source vault\n"
                               for _ in range(BLOCK // 30)).encode()
                image[block * BLOCK:(block + 1) * BLOCK] = text[:BLOCK].ljust(BLOCK, b"x")
            # kinds 0 and 3: zero blocks
        return image

    def change(self, blocks: list[int]) -> "SourceDisk":
        """The next backup of the same disk: these blocks rewritten with new random data."""
        image = bytearray(self.image)
        for block in blocks:
            image[block * BLOCK:(block + 1) * BLOCK] = self.rng.randbytes(BLOCK)
        later = SourceDisk(0, self.id_key, image)
        later.vault_id, later.resource_id = self.vault_id, self.resource_id
        return later

    def blocks(self) -> dict[bytes, bytes]:
        out = {}
        for block in range(DISK_SIZE // BLOCK):
            data = bytes(self.image[block * BLOCK:(block + 1) * BLOCK])
            if data.strip(b"\0"):
                out[chunk_id(data, self.id_key)] = data
        return out

    def manifest(self) -> bytes:
        n = DISK_SIZE // BLOCK
        ids, zero = bytearray(n * 32), bytearray(n)
        for block in range(n):
            data = bytes(self.image[block * BLOCK:(block + 1) * BLOCK])
            if data.strip(b"\0"):
                ids[block * 32:(block + 1) * 32] = chunk_id(data, self.id_key)
            else:
                zero[block] = 1
        return DiskManifest(DISK_SIZE, BLOCK, bytes(ids), bytes(zero)).encode()

    def wire(self, chunk: bytes) -> rp.WireChunk:
        data = self.blocks()[chunk]
        form = self.codec.to_wire(self.codec.encode(data, chunk), chunk, len(data))
        return rp.WireChunk(chunk_id=chunk, raw_size=len(data), flags=form.flags, dictionary_tag=form.tag,
                            payload=form.payload)

    def source_backup(self, backup_id: str) -> rp.SourceBackup:
        return rp.SourceBackup(backup_id=backup_id, project_id="project-in-a", vault_id=self.vault_id,
                               name="nightly", resource_id=self.resource_id, resource_name="data-disk",
                               resource_type=DISK, resource_size_bytes=DISK_SIZE, logical_bytes=DISK_SIZE)


@dataclasses.dataclass
class Replica:
    transfer_id: str
    backup_id: str
    source_backup_id: str


async def replica_vault(caller, object_type=DISK):
    return await create_vault(caller, f"replicas-{uuid.uuid4().hex[:6]}", object_type, REPLICATION)


async def begin(peer: Peer, caller, vault_id: str, disk: SourceDisk, source_backup_id: str | None = None,
                record_id: str | None = None, key_check: bytes | None = None,
                retention: rp.ReplicaRetention | None = None) -> rp.BeginTransferResponse:
    return await peer.call("BeginTransfer", rp.BeginTransferRequest(
        replication_record_id=record_id or str(uuid.uuid4()), source_region=SOURCE,
        source_backup=disk.source_backup(source_backup_id or str(uuid.uuid4())),
        destination_project_id=caller.project_id, destination_vault_id=vault_id, name="replica-1",
        source_vault_id=disk.vault_id, namespace_key_check=key_check or namespace_key_check(disk.id_key),
        retention=retention))


def delta_request(transfer_id: str, source_backup_id: str, disk: SourceDisk, parent: bytes | None = None,
                  parent_id: str = "") -> list[rp.PutManifestsRequest]:
    """The delta in two parts, so offsets are exercised."""
    delta = encode_delta(disk.manifest(), parent)
    half = len(delta) // 2
    return [rp.PutManifestsRequest(transfer_id=transfer_id, source_backup_id=source_backup_id,
                                   kind=rp.MANIFEST_KIND_DISK_DELTA, parent_replica_backup_id=parent_id,
                                   offset=offset, data=part, last=last)
            for offset, part, last in ((0, delta[:half], False), (half, delta[half:], True))]


async def replicate(peer: Peer, caller, vault_id: str, disk: SourceDisk, parent: tuple[str, bytes] | None = None,
                    retention: rp.ReplicaRetention | None = None):
    """A whole transfer as a source would run it; returns the replica and what the want-list asked for."""
    source_backup_id = str(uuid.uuid4())
    begun = await begin(peer, caller, vault_id, disk, source_backup_id, retention=retention)
    transfer_id = begun.transfer_id
    if not begun.namespace_known:
        await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=transfer_id, id_key=disk.id_key))
    parent_id, parent_manifest = parent or ("", None)
    staged = await peer.manifests(delta_request(transfer_id, source_backup_id, disk, parent_manifest, parent_id))
    assert [(s.source_backup_id, s.manifest_digest) for s in staged.staged] == [
        (source_backup_id, manifest_digest(disk.manifest()))]
    wanted, first = await peer.wanted(transfer_id)
    assert wanted == sorted(wanted)
    if disk.dictionary_id not in first.dictionary_ids:
        await peer.call("PutDictionary", rp.PutDictionaryRequest(
            transfer_id=transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))
    if wanted:
        acks = await peer.chunks(transfer_id, [[disk.wire(c) for c in wanted[i:i + 3]]
                                               for i in range(0, len(wanted), 3)])
        assert acks[-1].durable_through_seq == -(-len(wanted) // 3)
        assert not [r for ack in acks for r in ack.rejected]
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=transfer_id, expected=[
        rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]))
    assert [(d.source_backup_id, d.digest) for d in committed.replica] == [
        (source_backup_id, manifest_digest(disk.manifest()))]
    return Replica(transfer_id, committed.backup_id, source_backup_id), wanted, first


async def restored_bytes(caller, backup_id: str) -> bytes:
    disk_id = await new_disk_from(caller, backup_id, name=f"from-{backup_id[:8]}")
    with open(await disk_path(caller, disk_id), "rb") as f:
        return f.read()


def index_count(infra, vault_id: str) -> int:
    index = ChunkIndex(infra.postgres.url)
    try:
        return index.count(vault_id)
    finally:
        index.close()


def store_keys(infra, prefix: str) -> list[str]:
    root = infra.base / "store" / prefix
    return sorted(str(p.relative_to(infra.base / "store")) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


async def test_full_transfer_then_restore_byte_exact_and_the_same_content_again_wants_nothing(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=1)
    replica, wanted, first = await replicate(peer, caller, vault.vault_id, disk)
    assert sorted(wanted) == sorted(disk.blocks())
    assert (first.present_chunks, first.present_bytes) == (0, 0)

    backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=replica.backup_id))).backup
    assert backup.status == bp.BACKUP_STATUS_AVAILABLE and backup.image_type == bp.IMAGE_TYPE_REPLICATION
    source = backup.replicated_from
    assert (source.source_region, source.source_vault_id, source.source_backup_id, source.manifest_digest) == (
        SOURCE, disk.vault_id, replica.source_backup_id, manifest_digest(disk.manifest()))
    assert await restored_bytes(caller, replica.backup_id) == bytes(disk.image)
    verify = await caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault.vault_id))
    task = await wait_success(caller, verify.task_id)
    assert (task.extra_info["bad_chunks"], task.extra_info["checked_chunks"]) == ("0", str(len(disk.blocks())))

    # The same content again (another source backup of it): every chunk is present, none is wanted.
    # (as an auto replica: its policy's rule travels with it)
    again, wanted, first = await replicate(peer, caller, vault.vault_id, disk,
                                           parent=(replica.backup_id, disk.manifest()),
                                           retention=rp.ReplicaRetention(policy_id="policy-in-a", max_backups=5))
    assert wanted == [] and first.present_chunks == len(disk.blocks()) and first.present_bytes > 0
    assert again.backup_id != replica.backup_id
    auto = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=again.backup_id))).backup
    assert (auto.auto_trigger, auto.policy_id, auto.incremental) == (True, "policy-in-a", True)
    assert not backup.auto_trigger
    assert await restored_bytes(caller, again.backup_id) == bytes(disk.image)

    # A commit answered again (the source lost the answer) names the same replica; a begin of it too.
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=again.transfer_id))
    assert committed.backup_id == again.backup_id


async def test_incremental_delta_against_a_parent_replica(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=2)
    first, _, _ = await replicate(peer, caller, vault.vault_id, disk)
    later = disk.change([0, 5, 31])  # a zero block, a random block and the last block get new data
    begun = await begin(peer, caller, vault.vault_id, later)
    assert begun.namespace_known
    assert [(p.resource_id, p.replica_backup_id, p.source_backup_id, p.manifest_digest) for p in begun.parents] == [
        (disk.resource_id, first.backup_id, first.source_backup_id, manifest_digest(disk.manifest()))]
    await peer.call("AbortTransfer", rp.AbortTransferRequest(transfer_id=begun.transfer_id, reason="test"))

    second, wanted, _ = await replicate(peer, caller, vault.vault_id, later,
                                        parent=(first.backup_id, disk.manifest()))
    assert sorted(wanted) == sorted(set(later.blocks()) - set(disk.blocks()))
    assert len(wanted) == 3
    assert await restored_bytes(caller, second.backup_id) == bytes(later.image)
    assert await restored_bytes(caller, first.backup_id) == bytes(disk.image)


async def test_bad_chunks_are_rejected_and_not_indexed_and_commit_waits_for_them(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=3)
    source_backup_id = str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id)
    transfer_id = begun.transfer_id
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=transfer_id, id_key=disk.id_key))
    await peer.manifests(delta_request(transfer_id, source_backup_id, disk))
    wanted, _ = await peer.wanted(transfer_id)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))
    expected = [rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]

    flipped = disk.wire(wanted[0])
    flipped.payload = bytes([flipped.payload[0] ^ 1]) + flipped.payload[1:]
    stranger = SourceDisk(seed=99, id_key=disk.id_key)
    unwanted = stranger.wire(next(c for c in stranger.blocks() if c not in disk.blocks()))
    acks = await peer.chunks(transfer_id, [[flipped, unwanted, disk.wire(wanted[1])]])
    assert acks[-1].durable_through_seq == 1
    assert sorted((r.chunk_id, r.code) for ack in acks for r in ack.rejected) == sorted([
        (wanted[0], "RegionTransferService.6953"), (unwanted.chunk_id, "RegionTransferService.6954")])
    assert index_count(destination.infra, vault.vault_id) == 1  # only the good one
    still, _ = await peer.wanted(transfer_id)
    assert still == [c for c in wanted if c != wanted[1]]

    error = await expect_error(peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=transfer_id, expected=expected)), FAILED, "RegionTransferService.6955")
    assert f"{len(wanted) - 1} of the {len(wanted)} chunks" in error.details()
    await peer.chunks(transfer_id, [[disk.wire(c) for c in still]])
    wrong = [rp.ManifestDigest(source_backup_id=source_backup_id, digest=bytes(32))]
    await expect_error(peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=transfer_id, expected=wrong)),
                       FAILED, "RegionTransferService.6956")
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 0  # never a partial replica
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=transfer_id,
                                                                          expected=expected))
    assert await restored_bytes(caller, committed.backup_id) == bytes(disk.image)


async def test_resume_returns_the_same_transfer_and_wants_only_what_is_not_durable(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=4)
    record_id, source_backup_id = str(uuid.uuid4()), str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id, record_id=record_id)
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id, id_key=disk.id_key))
    await peer.manifests(delta_request(begun.transfer_id, source_backup_id, disk))
    wanted, _ = await peer.wanted(begun.transfer_id)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=begun.transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))
    half = len(wanted) // 2

    # The stream breaks once the first half is acknowledged (the source is killed, say, with more in flight).
    killed = asyncio.Event()

    async def requests():
        yield rp.PutChunksRequest(transfer_id=begun.transfer_id, seq=1, chunks=[disk.wire(c) for c in wanted[:half]])
        await killed.wait()

    call = peer.stub.PutChunks(requests(), metadata=peer.metadata, timeout=30)
    ack = await call.read()
    assert ack.durable_through_seq == 1 and not ack.rejected
    call.cancel()
    killed.set()

    again = await begin(peer, caller, vault.vault_id, disk, source_backup_id, record_id=record_id)
    assert (again.transfer_id, again.resumable, again.namespace_known) == (begun.transfer_id, True, True)
    assert [(s.source_backup_id, s.manifest_digest) for s in again.staged] == [
        (source_backup_id, manifest_digest(disk.manifest()))]
    rest, _ = await peer.wanted(again.transfer_id)
    assert rest == wanted[half:]
    await peer.chunks(again.transfer_id, [[disk.wire(c) for c in rest]])
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=again.transfer_id,
        expected=[rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]))
    assert await restored_bytes(caller, committed.backup_id) == bytes(disk.image)
    # After the commit, a begin of the same record says where the replica is.
    done = await begin(peer, caller, vault.vault_id, disk, source_backup_id, record_id=record_id)
    assert (done.transfer_id, done.committed_backup_id) == (begun.transfer_id, committed.backup_id)


async def test_garbage_collection_keeps_what_an_open_transfer_needs(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=10)
    source_backup_id = str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id)
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id, id_key=disk.id_key))
    await peer.manifests(delta_request(begun.transfer_id, source_backup_id, disk))
    wanted, _ = await peer.wanted(begun.transfer_id)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=begun.transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))
    await peer.chunks(begun.transfer_id, [[disk.wire(c) for c in wanted[:4]]])
    gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id, grace_seconds=0))
    task = await wait_success(caller, gc.task_id)
    assert task.extra_info["deleted_chunks"] == "0", task.extra_info
    rest, _ = await peer.wanted(begun.transfer_id)
    assert rest == wanted[4:]
    await peer.chunks(begun.transfer_id, [[disk.wire(c) for c in rest]])
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=begun.transfer_id,
        expected=[rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]))
    assert await restored_bytes(caller, committed.backup_id) == bytes(disk.image)


async def test_a_chunk_lost_before_the_commit_is_wanted_again_and_idle_transfers_expire(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=11)
    source_backup_id = str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id)
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id, id_key=disk.id_key))
    await peer.manifests(delta_request(begun.transfer_id, source_backup_id, disk))
    wanted, _ = await peer.wanted(begun.transfer_id)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=begun.transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))
    await peer.chunks(begun.transfer_id, [[disk.wire(c) for c in wanted]])
    assert (await peer.wanted(begun.transfer_id))[0] == []
    with psycopg.connect(destination.infra.postgres.conninfo(), autocommit=True) as conn:  # a quarantine, say
        conn.execute("DELETE FROM backup.chunks WHERE vault_id = %s AND digest = %s", (vault.vault_id, wanted[2]))
    expected = [rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]
    await expect_error(peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=begun.transfer_id, expected=expected)), FAILED, "RegionTransferService.6955")
    assert (await peer.wanted(begun.transfer_id))[0] == [wanted[2]]
    await peer.chunks(begun.transfer_id, [[disk.wire(wanted[2])]])
    await peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=begun.transfer_id, expected=expected))

    # A transfer silent past its time to live is aborted by the vault's next GC, and its staging goes.
    idle = SourceDisk(seed=12)
    idle_backup_id = str(uuid.uuid4())
    stale = await begin(peer, caller, vault.vault_id, idle, idle_backup_id)
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=stale.transfer_id, id_key=idle.id_key))
    await peer.manifests(delta_request(stale.transfer_id, idle_backup_id, idle))
    assert store_keys(destination.infra, f"{vault.vault_id}/staging/{stale.transfer_id}")
    with psycopg.connect(destination.infra.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE backup.replica_transfers SET last_activity_time = now() - interval '25 hours' "
                     "WHERE transfer_id = %s", (stale.transfer_id,))
    gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id))
    await wait_success(caller, gc.task_id)
    await expect_error(peer.call("ListWantedChunks", rp.ListWantedChunksRequest(
        transfer_id=stale.transfer_id, limit=10)), NOT_FOUND, "RegionTransferService.6950")
    assert store_keys(destination.infra, f"{vault.vault_id}/staging") == []


async def test_a_resume_adopts_the_packs_the_destination_put_but_did_not_index(destination, monkeypatch):
    """The destination stops between a pack's flush and its index rows (DESIGN.md 17.8): the next begin indexes
    that pack's chunks, checked, and the want-list no longer names them."""
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=16)
    record_id, source_backup_id = str(uuid.uuid4()), str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id, record_id=record_id)
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id, id_key=disk.id_key))
    await peer.manifests(delta_request(begun.transfer_id, source_backup_id, disk))
    wanted, _ = await peer.wanted(begun.transfer_id)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=begun.transfer_id, dictionary_id=disk.dictionary_id, content=disk.dictionary))

    def killed_after_the_flush(sink, sealed, pack_id=None):
        sink.writer.put_detached(sealed.pack, pack_id)
        sink.store.flush()
        raise RuntimeError("the destination stopped before the index rows")

    with monkeypatch.context() as patch:
        patch.setattr(ChunkSink, "write", killed_after_the_flush)
        with pytest.raises(grpc.aio.AioRpcError):
            await peer.chunks(begun.transfer_id, [[disk.wire(c) for c in wanted[:5]]])
    assert index_count(destination.infra, vault.vault_id) == 0

    again = await begin(peer, caller, vault.vault_id, disk, source_backup_id, record_id=record_id)
    assert again.resumable and index_count(destination.infra, vault.vault_id) == 5
    rest, _ = await peer.wanted(again.transfer_id)
    assert rest == wanted[5:]
    await peer.chunks(again.transfer_id, [[disk.wire(c) for c in rest]])
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=again.transfer_id,
        expected=[rp.ManifestDigest(source_backup_id=source_backup_id, digest=manifest_digest(disk.manifest()))]))
    assert await restored_bytes(caller, committed.backup_id) == bytes(disk.image)


async def test_deleting_a_replica_repacks_what_its_successor_still_needs(destination):
    """GC's repack checks a replica's chunks with its namespace's key: a pack left sparse by a deleted replica is
    rewritten, and the later replica that shares its chunks still restores."""
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=17)
    first, _, _ = await replicate(peer, caller, vault.vault_id, disk)
    later = disk.change([1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22])  # 12 of its 16 data blocks
    second, wanted, _ = await replicate(peer, caller, vault.vault_id, later, parent=(first.backup_id, disk.manifest()))
    kept = sorted(set(disk.blocks()) & set(later.blocks()))
    assert len(wanted) == 12 and len(kept) == 4

    def packs_of(ids):
        index = ChunkIndex(destination.infra.postgres.url)
        try:
            return {where[0] for where in index.locations(vault.vault_id, ids).values()}
        finally:
            index.close()

    before = packs_of(kept)
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=first.backup_id))
    await wait_success(caller, reply.task_id)
    assert index_count(destination.infra, vault.vault_id) == 16
    assert packs_of(kept).isdisjoint(before)  # moved to a new pack, checked with the namespace's key
    assert await restored_bytes(caller, second.backup_id) == bytes(later.image)


async def test_a_namespace_keeps_its_key(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=5)
    await replicate(peer, caller, vault.vault_id, disk)
    impostor = SourceDisk(seed=5)  # the same source vault id, another id key
    impostor.vault_id = disk.vault_id
    await expect_error(begin(peer, caller, vault.vault_id, impostor), FAILED, "RegionTransferService.6951")
    # A key that is not the one the transfer began with is refused too, before anything is recorded.
    fresh = SourceDisk(seed=6)
    begun = await begin(peer, caller, vault.vault_id, fresh)
    await expect_error(peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(
        transfer_id=begun.transfer_id, id_key=os.urandom(32))), FAILED, "RegionTransferService.6951")


async def test_only_a_peer_region_may_call(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    disk = SourceDisk(seed=7)
    stranger = destination.stub(issue_peer_token(destination.services.jwt_secret, "region-c", 600))
    await expect_error(begin(stranger, caller, vault.vault_id, disk), DENIED, "RegionTransferService.6921")
    service = destination.stub(issue_token(destination.services.jwt_secret, project_id="x", subject="region:region-a",
                                           roles=["service"], ttl_seconds=600))
    await expect_error(begin(service, caller, vault.vault_id, disk), DENIED, "RegionTransferService.6921")
    user = destination.stub(destination.services.token(caller.project_id))
    await expect_error(begin(user, caller, vault.vault_id, disk), DENIED)
    # A peer cannot speak for another region either.
    peer = destination.stub()
    request = rp.CheckDestinationRequest(source_region="region-c", destination_project_id=caller.project_id,
                                         destination_vault_id=vault.vault_id, resource_type=DISK)
    await expect_error(peer.call("CheckDestination", request), DENIED, "RegionTransferService.6921")


async def test_check_destination(destination):
    caller = destination.caller()
    peer = destination.stub()
    vault = await replica_vault(caller)
    small = await create_vault(caller, "small-replicas", DISK, REPLICATION, size_gb=1)
    backups = await create_vault(caller, "not-replicas", DISK)

    def check(vault_id: str, resource_type=DISK, size: int = DISK_SIZE, project: str | None = None):
        return peer.call("CheckDestination", rp.CheckDestinationRequest(
            source_region=SOURCE, destination_project_id=project or caller.project_id, destination_vault_id=vault_id,
            resource_type=resource_type, resource_size_bytes=size))

    assert (await check(vault.vault_id)).vault_name == vault.name
    await expect_error(check(str(uuid.uuid4())), NOT_FOUND, "RegionTransferService.6907")
    await expect_error(check(vault.vault_id, project="another-project"), NOT_FOUND, "RegionTransferService.6907")
    await expect_error(check(backups.vault_id), FAILED, "RegionTransferService.6908")
    await expect_error(check(vault.vault_id, SERVER), FAILED, "RegionTransferService.6908")
    await expect_error(check(small.vault_id, size=2 << 30), grpc.StatusCode.RESOURCE_EXHAUSTED,
                       "RegionTransferService.6909")
    disk = SourceDisk(seed=8)
    await expect_error(begin(peer, caller, backups.vault_id, disk), FAILED, "RegionTransferService.6908")


async def test_bad_requests_write_nothing(destination):
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    disk = SourceDisk(seed=9)
    unknown = str(uuid.uuid4())
    await expect_error(peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=unknown, id_key=disk.id_key)),
                       NOT_FOUND, "RegionTransferService.6950")
    await expect_error(peer.call("ListWantedChunks", rp.ListWantedChunksRequest(transfer_id=unknown, limit=10)),
                       NOT_FOUND, "RegionTransferService.6950")
    await expect_error(peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id="not-a-uuid")),
                       NOT_FOUND, "RegionTransferService.6950")

    source_backup_id = str(uuid.uuid4())
    begun = await begin(peer, caller, vault.vault_id, disk, source_backup_id)
    transfer_id = begun.transfer_id
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=transfer_id, id_key=disk.id_key))
    good = delta_request(transfer_id, source_backup_id, disk)
    broken = bytearray(good[1].data)
    broken[-40] ^= 0xFF  # an id in the last NEW op: the rebuilt manifest is not the target
    bad_cases = {
        "malformed delta": [good[0], rp.PutManifestsRequest(**{**_fields(good[1]), "data": bytes(broken)})],
        "a gap between parts": [good[0], rp.PutManifestsRequest(**{**_fields(good[1]), "offset": 1})],
        "no last part": [good[0]],
        "another backup": [rp.PutManifestsRequest(**{**_fields(r), "source_backup_id": str(uuid.uuid4())})
                           for r in good],
        "a tree for a disk": [rp.PutManifestsRequest(**{**_fields(r), "kind": rp.MANIFEST_KIND_TREE_ZSTD})
                              for r in good],
        "a parent never offered": [rp.PutManifestsRequest(**{**_fields(r), "parent_replica_backup_id": unknown})
                                   for r in good],
    }
    for case, requests in bad_cases.items():
        error = await expect_error(peer.manifests(requests), INVALID, "RegionTransferService.6952")
        assert error, case
    assert store_keys(destination.infra, f"{vault.vault_id}/staging") == []
    await expect_error(peer.call("ListWantedChunks", rp.ListWantedChunksRequest(transfer_id=transfer_id, limit=10)),
                       FAILED, "RegionTransferService.6955")  # nothing was staged
    await expect_error(peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=transfer_id, dictionary_id=bytes(32), content=disk.dictionary)),
        grpc.StatusCode.DATA_LOSS, "RegionTransferService.6957")
    await expect_error(peer.call("ListWantedChunks", rp.ListWantedChunksRequest(transfer_id=transfer_id, limit=0)),
                       INVALID, "RegionTransferService.6911")
    bad_name = rp.BeginTransferRequest(
        replication_record_id=str(uuid.uuid4()), source_region=SOURCE, source_backup=disk.source_backup(unknown),
        destination_project_id=caller.project_id, destination_vault_id=vault.vault_id, name="a/b",
        source_vault_id=disk.vault_id, namespace_key_check=namespace_key_check(disk.id_key))
    await expect_error(peer.call("BeginTransfer", bad_name), INVALID, "RegionTransferService.6911")
    assert store_keys(destination.infra, f"{vault.vault_id}/nsdicts") == []

    # An aborted transfer is gone for every call.
    await peer.call("AbortTransfer", rp.AbortTransferRequest(transfer_id=transfer_id, reason="cancelled"))
    await expect_error(peer.manifests(good), NOT_FOUND, "RegionTransferService.6950")
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 0 and index_count(destination.infra, vault.vault_id) == 0


def _fields(message) -> dict:
    return {field.name: value for field, value in message.ListFields()}


async def test_a_server_replica_commits_its_disks_together(destination):
    caller = destination.caller()
    vault = await create_vault(caller, "server-replicas", SERVER, REPLICATION)
    peer = destination.stub()
    first = SourceDisk(seed=13)
    second = SourceDisk(seed=14, id_key=first.id_key)
    second.vault_id = first.vault_id
    disks = {str(uuid.uuid4()): first, str(uuid.uuid4()): second}
    server_backup_id = str(uuid.uuid4())
    source = rp.SourceBackup(
        backup_id=server_backup_id, project_id="project-in-a", vault_id=first.vault_id, name="nightly",
        resource_id=str(uuid.uuid4()), resource_name="web-1", resource_type=SERVER,
        resource_size_bytes=2 * DISK_SIZE, logical_bytes=2 * DISK_SIZE,
        children=[rp.SourceBackup(**{**_fields(disk.source_backup(backup_id)), "device": f"vd{'ab'[i]}"})
                  for i, (backup_id, disk) in enumerate(disks.items())])
    begun = await peer.call("BeginTransfer", rp.BeginTransferRequest(
        replication_record_id=str(uuid.uuid4()), source_region=SOURCE, source_backup=source,
        destination_project_id=caller.project_id, destination_vault_id=vault.vault_id, name="server-replica",
        source_vault_id=first.vault_id, namespace_key_check=namespace_key_check(first.id_key)))
    transfer_id = begun.transfer_id
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=transfer_id, id_key=first.id_key))
    requests = [r for backup_id, disk in disks.items() for r in delta_request(transfer_id, backup_id, disk)]
    requests.append(rp.PutManifestsRequest(transfer_id=transfer_id, source_backup_id=server_backup_id,
                                           kind=rp.MANIFEST_KIND_SERVER, last=True))
    staged = await peer.manifests(requests)
    assert {s.source_backup_id for s in staged.staged} == {server_backup_id, *disks}
    wanted, _ = await peer.wanted(transfer_id, limit=16384)
    blocks = {**first.blocks(), **second.blocks()}
    assert sorted(wanted) == sorted(blocks)
    await peer.call("PutDictionary", rp.PutDictionaryRequest(
        transfer_id=transfer_id, dictionary_id=first.dictionary_id, content=first.dictionary))
    owner = {c: d for d in disks.values() for c in d.blocks()}
    await peer.chunks(transfer_id, [[owner[c].wire(c) for c in wanted]])
    expected = [rp.ManifestDigest(source_backup_id=b, digest=manifest_digest(d.manifest())) for b, d in disks.items()]
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(transfer_id=transfer_id,
                                                                          expected=expected))
    backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=committed.backup_id))).backup
    assert backup.resource_type == SERVER and backup.status == bp.BACKUP_STATUS_AVAILABLE
    assert backup.replicated_from.source_backup_id == server_backup_id
    assert len(backup.children) == 2
    for child in backup.children:
        replica = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=child.backup_id))).backup
        disk = disks[replica.replicated_from.source_backup_id]
        assert replica.replicated_from.manifest_digest == manifest_digest(disk.manifest())
        assert await restored_bytes(caller, child.backup_id) == bytes(disk.image)


def build_tree(root: Path) -> None:
    rng = random.Random(15)
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("read me\n" * 5000)
    (root / "docs" / "deep" / "random.bin").write_bytes(rng.randbytes(700_000))
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("docs/readme.txt")


def describe(root: Path) -> dict:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir", stat.S_IMODE(path.stat().st_mode))
        else:
            found[rel] = ("file", stat.S_IMODE(path.stat().st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return found


async def test_a_file_system_replica_crosses_whole_and_restores_as_a_tree(destination, tmp_path):
    """The source here is the data path's own backup of a folder, into a vault held in memory."""
    caller = destination.caller()
    vault = await create_vault(caller, "tree-replicas", TURBO, REPLICATION)
    peer = destination.stub()
    build_tree(tmp_path / "share")
    keys = VaultKeys(os.urandom(32), os.urandom(32))
    store, index, source_vault = MemoryChunkStore(), MemoryChunkIndex(), str(uuid.uuid4())
    manifest = backup_tree(tmp_path / "share", keys, store, index, source_vault).manifest
    encoded = manifest.encode()
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, source_vault, keys).by_tag)
    sizes = manifest.chunk_sizes()
    values = ChunkSource(store, codec, source_vault, index).fetch_many(sizes)

    backup_id = str(uuid.uuid4())
    begun = await peer.call("BeginTransfer", rp.BeginTransferRequest(
        replication_record_id=str(uuid.uuid4()), source_region=SOURCE, destination_project_id=caller.project_id,
        destination_vault_id=vault.vault_id, source_vault_id=source_vault,
        namespace_key_check=namespace_key_check(keys.id_key), source_backup=rp.SourceBackup(
            backup_id=backup_id, project_id="project-in-a", vault_id=source_vault, name="share-nightly",
            resource_id=str(uuid.uuid4()), resource_name="share", resource_type=TURBO)))
    await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id, id_key=keys.id_key))
    await peer.manifests([rp.PutManifestsRequest(
        transfer_id=begun.transfer_id, source_backup_id=backup_id, kind=rp.MANIFEST_KIND_TREE_ZSTD,
        data=zstandard.ZstdCompressor().compress(encoded), last=True)])
    wanted, first = await peer.wanted(begun.transfer_id, limit=16384)
    assert sorted(wanted) == sorted(sizes)
    for key in store.iterate(f"{source_vault}/dicts/"):
        dictionary_id = bytes.fromhex(key.rpartition("/")[2])
        if dictionary_id not in first.dictionary_ids:
            await peer.call("PutDictionary", rp.PutDictionaryRequest(
                transfer_id=begun.transfer_id, dictionary_id=dictionary_id,
                content=codec.unseal(store.get(key), key.encode(), key)))
    wires = []
    for chunk in wanted:
        form = codec.to_wire(values[chunk], chunk, sizes[chunk])
        wires.append(rp.WireChunk(chunk_id=chunk, raw_size=sizes[chunk], flags=form.flags,
                                  dictionary_tag=form.tag, payload=form.payload))
    await peer.chunks(begun.transfer_id, [wires])
    committed = await peer.call("CommitTransfer", rp.CommitTransferRequest(
        transfer_id=begun.transfer_id,
        expected=[rp.ManifestDigest(source_backup_id=backup_id, digest=manifest_digest(encoded))]))

    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="share-b"))).file_system
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=committed.backup_id, file_system_id=fs.resource_id, new_directory=True))
    await wait_success(caller, reply.task_id)
    [made] = os.listdir(fs.path)
    assert describe(Path(fs.path) / made) == describe(tmp_path / "share")


async def test_the_idle_transfer_time_to_live_is_a_setting(destination):
    """CBR_REPLICATION_TRANSFER_TTL_HOURS: with 1 hour, GC aborts a transfer silent for 2 hours and keeps one
    silent for 30 minutes (the default, 24 hours, would keep both)."""
    services = destination.services
    caller = destination.caller()
    vault = await replica_vault(caller)
    peer = destination.stub()
    transfers = {}
    for seed, idle in ((21, "2 hours"), (22, "30 minutes")):
        disk, backup_id = SourceDisk(seed=seed), str(uuid.uuid4())
        begun = await begin(peer, caller, vault.vault_id, disk, backup_id)
        await peer.call("PutNamespaceKey", rp.PutNamespaceKeyRequest(transfer_id=begun.transfer_id,
                                                                      id_key=disk.id_key))
        await peer.manifests(delta_request(begun.transfer_id, backup_id, disk))
        transfers[idle] = begun.transfer_id
        with psycopg.connect(destination.infra.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("UPDATE backup.replica_transfers SET last_activity_time = now() - %s::interval "
                         "WHERE transfer_id = %s", (idle, begun.transfer_id))
    await services.stop_workers()
    try:
        await services.start_worker(replication_transfer_ttl_hours=1.0)
        gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id))
        await wait_success(caller, gc.task_id)
    finally:
        await services.stop_workers()
        await services.start_worker()
    await expect_error(peer.call("ListWantedChunks", rp.ListWantedChunksRequest(
        transfer_id=transfers["2 hours"], limit=10)), NOT_FOUND, "RegionTransferService.6950")
    kept = await peer.call("ListWantedChunks", rp.ListWantedChunksRequest(transfer_id=transfers["30 minutes"],
                                                                          limit=10))
    assert kept.chunk_ids
    staging = store_keys(destination.infra, f"{vault.vault_id}/staging")
    assert staging and all(transfers["30 minutes"] in key for key in staging)  # the expired one's staging went


async def test_a_replication_vault_survives_a_kek_rotation_and_the_loss_of_its_rows(destination, monkeypatch,
                                                                                  tmp_path):
    """The namespace's wrapped id key lives in the store beside the vault's keys (DESIGN.md 17.3): a KEK rotation
    re-wraps it (row and object), and with the vault's rows in the backup schema gone, the rebuild brings the
    namespace back with the replica, which restores byte for byte."""
    import subprocess
    import sys

    from cbr_backup.chunkstore import FsChunkStore
    from cbr_backup.keys import KeyFileProvider, create_kek_file
    from cbr_backup.keys.__main__ import main as keys_command
    from tests.support.services import kek_file

    services, infra = destination.services, destination.infra
    caller = destination.caller()
    vault = await replica_vault(caller)
    disk = SourceDisk(seed=31)
    replica = (await replicate(destination.stub(), caller, vault.vault_id, disk))[0].backup_id
    store = FsChunkStore(str(infra.base / "store"))

    def namespace_objects():
        return sorted(k for k in store.iterate(f"{vault.vault_id}/ns/") if "/key-" in k)
    objects = namespace_objects()
    assert len(objects) == 1 and store.get(objects[0]).startswith(b"CBRNSKEY1")

    def namespace_rows():
        with psycopg.connect(infra.postgres.conninfo()) as conn:
            return conn.execute("SELECT namespace_id, kek_id, wrapped_id_key FROM backup.replica_namespaces "
                                "WHERE vault_id = %s", (vault.vault_id,)).fetchall()
    before = namespace_rows()
    old_kek, new_kek = kek_file(infra), create_kek_file(tmp_path / "new-kek")
    env = services.worker_env()
    for name in ("CBR_DATABASE_URL", "CBR_KEK_FILE", "CBR_STORE_DIR", "CBR_STORE_URL"):
        monkeypatch.setenv(name, env.get(name, ""))
    monkeypatch.setenv("CBR_KEK_FILE", str(old_kek))
    await services.stop_workers()
    try:
        assert await asyncio.to_thread(keys_command, ["rotate", "--new-kek-file", str(new_kek)]) == 0
        after = namespace_rows()
        assert [r[1] for r in after] == [KeyFileProvider.from_file(new_kek).kek_id] and after[0][2] != before[0][2]
        moved = namespace_objects()
        assert len(moved) == 1 and moved != objects  # the new KEK's object, the old one dropped
        await services.start_worker(kek_file=str(new_kek))
        assert await restored_bytes(caller, replica) == bytes(disk.image)
    finally:  # back to the session's KEK, for the other tests
        await services.stop_workers()
        monkeypatch.setenv("CBR_KEK_FILE", str(new_kek))
        assert await asyncio.to_thread(keys_command, ["rotate", "--new-kek-file", str(old_kek)]) == 0
        await services.start_worker()
    assert namespace_rows()[0][1] == before[0][1]

    # The database loses the vault's rows; the store and the KEK bring the replica back.
    with psycopg.connect(infra.postgres.conninfo(), autocommit=True) as conn:
        for table in ("backups", "chunks", "vault_keys", "checkpoints", "tasks", "replica_namespaces"):
            conn.execute(f"DELETE FROM backup.{table} WHERE vault_id = %s", (vault.vault_id,))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cbr_backup.rebuild", "--vault-id",
                                                    vault.vault_id], env=env, capture_output=True, text=True,
                                   timeout=120)
    assert done.returncode == 0, done.stderr
    assert "replica namespaces: 1" in done.stdout, done.stdout
    assert [r[:2] for r in namespace_rows()] == [r[:2] for r in before]
    assert await restored_bytes(caller, replica) == bytes(disk.image)

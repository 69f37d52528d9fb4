"""The replication job (DESIGN.md 17.2, 17.5-17.9): reads a source backup and sends the destination region only what
it lacks, through the peer's RegionTransferService.

Steps: BeginTransfer (a retried attempt gets the same transfer back), the namespace key if the destination lacks
it, each manifest not yet staged (a disk's as a delta against a replica both ends hold), the want-list, the
dictionaries it names, the wanted chunks, then CommitTransfer and a check that the replica's manifest digests are
the source's. Chunks go in pack order, each pack read front to back in ranged reads, and are sent as stored,
without the encryption envelope, in messages of at most 4 MiB with at most 48 MiB beyond what the destination
made durable. Before a read batch's first message leaves, the job row records how far the send order goes
(`sent_through`) and the counters as they will be once the batch has left, so a later attempt counts a chunk it
sends again as re-sent, and the counters stay exact (17.9); that write runs while the batch before goes out.

A destination that stops answering is waited for within the attempt (a restart of its server resumes the same
transfer); past CBR_REPLICATION_PEER_PATIENCE_SECONDS the attempt fails and the job machinery retries it, the last
with 6920. A cancel aborts the transfer.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import zstandard

from cbr.common.v1 import common_pb2
from cbr.replication.v1 import replication_pb2 as rpb
from cbr_backup.adapters.replication_jobs import ReplicationJob, replication_jobs_of
from cbr_backup.adapters.transfer_client import PeerDownError, TransferClient, encode_put_chunks, peer_error
from cbr_backup.datapath.chunk_codec import FLAG_DICT, ChunkCodec, WireForm, dictionary_tag
from cbr_backup.datapath.disk_backup import manifest_key
from cbr_backup.datapath.errors import ChunkMissingError
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.datapath.manifest_delta import encode_delta, manifest_digest, namespace_key_check
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.tree_manifest import TreeManifest
from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup
from cbr_backup.domain.replication_source import (
    MESSAGE_LIMIT, READABLE_STATUSES, ChunkNotReplicatedError, ChunkRejectedTwiceError, DestinationRegionUnknownError,
    PeerRefusedError, PeerUnreachableError, ReplicaDigestsDifferError, SendWindow, check_replicable, combined_digest,
    group_reads, manifest_parts, read_batches, send_order, split_messages)
from cbr_backup.service import lifecycle
from cbr_backup.service.replication_tasks import publish_update
from cbr_backup.worker import manifests
from cbr_backup.worker.context import JobCancelled, JobContext, check_still_mine
from cbr_backup.worker.replication_controls import ReplicationControls
from cbr_common.errors import CbrError
from cbr_common.proto_enums import enum_value

log = logging.getLogger("cbr.worker")

PEER_PAUSE = (0.5, 5.0)     # first and longest pause between tries to reach it again
ACK_STALL = 120.0           # seconds without an acknowledgement while messages wait: the stream is broken
WANTED_PAGE = 16384
PROGRESS_EVERY = 2.0        # seconds between progress updates to the record
MANIFEST_PART = MESSAGE_LIMIT - (1 << 10)
REJECTED_CHECK = "RegionTransferService.6953"       # the chunk failed its check there: read and sent again
DICTIONARY_MISSING = "RegionTransferService.6957"   # its dictionary is not there: sent, then the chunk again
CHUNKS_MISSING = "RegionTransferService.6955"       # a commit that found named chunks missing


@dataclass
class Part:
    """One manifest that crosses: a disk's or a tree's (encoded as stored), or a server's record (no content)."""
    backup: Backup
    kind: int
    encoded: bytes = b""

    @property
    def digest(self) -> bytes:
        return manifest_digest(self.encoded) if self.encoded else b""


async def run_replication(ctx: JobContext) -> None:
    task = ctx.task
    async with ctx.make_uow() as uow:
        job = await replication_jobs_of(uow).get(task.task_id)
        backup = await uow.backups.get_backup(task.project_id, task.backup_id)
    if job is None:
        raise errors.TaskNotFoundError(f"task {task.task_id} has no replication row")
    backup = check_replicable(backup, task.backup_id)
    regions = ctx.resources.regions
    peer = regions.peer(job.destination_region) if regions is not None else None
    if peer is None:
        raise DestinationRegionUnknownError(f"region {job.destination_region} is not in this region's directory")
    controls = ReplicationControls(ctx, job, peer)
    await controls.take_slot()  # the record stays WAITING until the job may send (17.11)
    try:
        await _replicate(ctx, job, backup, peer, regions.local, controls)
    finally:
        await controls.release_slot()


async def _replicate(ctx: JobContext, job: ReplicationJob, backup: Backup, peer, local_region: str,
                     controls: ReplicationControls) -> None:
    task = ctx.task
    sender = Sender(ctx, job, backup, local_region, controls)
    async with ctx.make_uow() as uow:
        await publish_update(uow, task, job, "started", bytes_total=backup.stored_bytes)
        await uow.commit()
    client = TransferClient(peer, sender.count_metadata)
    try:
        await sender.run(client)
    except JobCancelled:
        await sender.abort(client, "cancelled")
        raise
    except CbrError as exc:
        # An end no retry changes (only an unreachable peer is retried): the destination drops the transfer, and
        # what it stored is its GC's.
        if not isinstance(exc, PeerUnreachableError):
            await sender.abort(client, f"{exc.cbr_code}: {exc.message}"[:200])
        raise
    finally:
        await client.close()


class Sender:
    def __init__(self, ctx: JobContext, job: ReplicationJob, backup: Backup, local_region: str,
                 controls: ReplicationControls):
        self.ctx = ctx
        self.controls = controls
        self.task = ctx.task
        self.job = job
        self.backup = backup
        self.local_region = local_region
        self.parts: list[Part] = []
        self.raw_sizes: dict[bytes, int] = {}   # every chunk the manifests name: the only ones served
        self.keys = None
        self.codec: ChunkCodec | None = None
        self._metadata = 0                      # counted since the last write to the job row
        self._last_progress = 0.0
        self._down_since: float | None = None   # the destination has not answered since
        self.total = backup.stored_bytes
        self.dictionaries_there: set[int] = set()  # tags of the namespace's dictionaries the destination holds

    def count_metadata(self, nbytes: int, answer: bool = False) -> None:
        self._metadata += nbytes
        if answer:
            self._down_since = None

    async def run(self, client: TransferClient) -> None:
        ctx = self.ctx
        self.keys = await ctx.keys(self.backup.vault_id)
        self.codec = ChunkCodec(self.keys)
        # The vault's shared lock, as a restore holds it: GC does not repack (move) chunks this job reads.
        async with ctx.index(self.backup.vault_id) as index:
            self.parts = await asyncio.to_thread(self._load_parts)
            source = ChunkSource(ctx.store, self.codec, self.backup.vault_id, index)
            pause = PEER_PAUSE[0]
            while True:
                try:
                    replica = await self._session(client, index, source)
                    break
                except PeerDownError as exc:
                    self._down_since = self._down_since or time.monotonic()
                    patience = ctx.resources.peer_patience_seconds
                    if time.monotonic() - self._down_since > patience:
                        raise PeerUnreachableError(f"region {client.peer.name} did not answer for "
                                                   f"{patience:.0f} s: {exc}") from None
                    log.info("destination unreachable; the transfer resumes when it answers",
                             extra={"fields": {"task": self.task.task_id, "error": str(exc)[:300]}})
                    await self._pause(pause)
                    pause = min(pause * 2, PEER_PAUSE[1])
        await self._complete(replica)

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_cancelled()
            await asyncio.sleep(min(0.2, seconds))

    def check_cancelled(self) -> None:
        if self.ctx.cancelled:
            raise JobCancelled(f"task {self.task.task_id} was cancelled")

    # Reading the source

    def _load_parts(self) -> list[Part]:
        parts = []
        for row in manifest_parts(self.backup):
            encoded = self._manifest_bytes(row.manifest_id)
            parsed = TreeManifest.decode(encoded) if row.manifest_kind == "tree" else DiskManifest.decode(encoded)
            self.raw_sizes.update(manifests.chunk_sizes(parsed))
            kind = rpb.MANIFEST_KIND_TREE_ZSTD if row.manifest_kind == "tree" else rpb.MANIFEST_KIND_DISK_DELTA
            parts.append(Part(row, kind, encoded))
        if self.backup.resource_type == "server":
            parts.append(Part(self.backup, rpb.MANIFEST_KIND_SERVER))  # after its disks (17.5, item 4)
        return parts

    def _manifest_bytes(self, manifest_id: str) -> bytes:
        key = manifest_key(self.backup.vault_id, manifest_id)
        try:
            value = self.ctx.store.get(key)
        except ChunkNotFoundError:
            raise errors.BackupCorruptError(f"manifest {key} is missing") from None
        return self.codec.unseal(value, key.encode(), key)

    def _dictionary(self, tag: int) -> tuple[bytes, bytes]:
        """(id, content) of the source vault's dictionary with this tag, checked against its id."""
        prefix = f"{self.backup.vault_id}/dicts/"
        for key in self.ctx.store.iterate(prefix):
            name = key[len(prefix):]
            if len(name) == 64 and dictionary_tag(bytes.fromhex(name)) == tag:
                dictionary_id = bytes.fromhex(name)
                content = self.codec.unseal(self.ctx.store.get(key), key.encode(), key)
                if self.codec.chunk_id(content) != dictionary_id:
                    raise errors.BackupCorruptError(f"dictionary {key} does not match its id")
                return dictionary_id, content
        raise errors.BackupCorruptError(f"the vault's dictionary {tag:08x}, which a chunk names, is missing")

    async def send_dictionaries(self, client: TransferClient, wires: list[tuple[bytes, WireForm]]) -> None:
        """PutDictionary, before the first chunk that uses it, for each dictionary the destination lacks."""
        for tag in sorted({w.tag for _, w in wires if w.flags & FLAG_DICT} - self.dictionaries_there):
            dictionary_id, content = await asyncio.to_thread(self._dictionary, tag)
            await client.put_dictionary(self.job.transfer_id, dictionary_id, content)
            self.dictionaries_there.add(tag)

    def _read_wire(self, source: ChunkSource, ids: list[bytes], locations: dict) -> list[tuple[bytes, WireForm]]:
        """The batch's chunks as they cross, in the batch's (id) order; read grouped by pack."""
        reads = group_reads(ids, locations)
        values: dict[bytes, bytes] = {}
        for pack_id, entries in reads.packs:
            values.update(source.read_pack(pack_id, entries))
        if reads.lone:
            values.update(source.fetch_many(reads.lone))
        missing = [chunk for chunk in ids if chunk not in values]
        if missing:
            raise ChunkMissingError(f"{missing[0].hex()} (and {len(missing) - 1} more)" if len(missing) > 1
                                    else missing[0].hex())
        # Each stored value let go once its wire form exists: the batch is held once, not twice.
        return [(chunk, self.codec.to_wire(values.pop(chunk), chunk, self.raw_sizes[chunk])) for chunk in ids]

    # One session with the destination: begin (or resume) ... commit

    async def _session(self, client: TransferClient, index, source: ChunkSource) -> rpb.CommitTransferResponse:
        job = self.job
        begin = await client.begin(self._begin_request())
        if begin.transfer_id != job.transfer_id:
            job.transfer_id = begin.transfer_id
            await self.persist()
        if begin.committed_backup_id:
            return await self._commit(client)  # an earlier attempt committed and lost the answer
        if not begin.namespace_known:
            await client.put_namespace_key(job.transfer_id, self.keys.id_key)
        staged = {s.source_backup_id for s in begin.staged}
        requests = await self._manifest_requests([p for p in self.parts if p.backup.backup_id not in staged],
                                                 begin.parents)
        if requests:
            await client.put_manifests(requests)
        await self._send_chunks(client, index, source, await self._wanted(client))
        try:
            return await self._commit(client)
        except PeerRefusedError as exc:
            if exc.cbr_code != CHUNKS_MISSING:
                raise
            # Chunks the destination lost since it said it held them (its GC, a quarantine): asked for once more.
            log.warning("commit found chunks missing; asking for them again",
                        extra={"fields": {"task": self.task.task_id, "error": exc.message[:300]}})
        await self._send_chunks(client, index, source, await self._wanted(client))
        return await self._commit(client)

    def _begin_request(self) -> rpb.BeginTransferRequest:
        job = self.job
        request = rpb.BeginTransferRequest(
            replication_record_id=job.record_id, source_region=self.local_region,
            source_backup=source_backup(self.backup), destination_project_id=job.destination_project_id,
            destination_vault_id=job.destination_vault_id, name=job.name, description=job.description,
            source_vault_id=job.source_vault_id, namespace_key_check=namespace_key_check(self.keys.id_key))
        if job.retention is not None:
            request.retention.CopyFrom(rpb.ReplicaRetention.FromString(job.retention))
        return request

    async def _manifest_requests(self, parts: list[Part], parents) -> list[rpb.PutManifestsRequest]:
        by_resource = defaultdict(list)
        for parent in parents:
            by_resource[parent.resource_id].append(parent)
        requests = []
        for part in parts:
            parent_id, data = "", b""
            if part.kind == rpb.MANIFEST_KIND_DISK_DELTA:
                parent_id, parent = await self._parent(part.backup, by_resource[part.backup.resource_id])
                data = await asyncio.to_thread(encode_delta, part.encoded, parent)
            elif part.kind == rpb.MANIFEST_KIND_TREE_ZSTD:
                data = await asyncio.to_thread(zstandard.ZstdCompressor(level=3).compress, part.encoded)
            offsets = range(0, len(data), MANIFEST_PART) if data else [0]
            for offset in offsets:
                piece = data[offset:offset + MANIFEST_PART]
                requests.append(rpb.PutManifestsRequest(
                    transfer_id=self.job.transfer_id, source_backup_id=part.backup.backup_id, kind=part.kind,
                    parent_replica_backup_id=parent_id, offset=offset, data=piece,
                    last=offset + len(piece) >= len(data)))
        return requests

    async def _parent(self, row: Backup, candidates) -> tuple[str, bytes | None]:
        """The replica to send a disk's manifest against: the newest whose source backup this vault still holds
        (its manifest is then the replica's, byte for byte); none: against an empty manifest."""
        found = []
        async with self.ctx.make_uow() as uow:
            for parent in candidates:
                source = await uow.backups.get_backup(self.task.project_id, parent.source_backup_id)
                if (source is not None and source.vault_id == self.backup.vault_id and source.manifest_id
                        and source.manifest_kind == "disk" and source.status in READABLE_STATUSES):
                    found.append((source.created_time, parent, source))
        for _, parent, source in sorted(found, key=lambda f: f[0], reverse=True):
            try:
                encoded = await asyncio.to_thread(self._manifest_bytes, source.manifest_id)
            except CbrError:
                continue
            if not parent.manifest_digest or manifest_digest(encoded) == parent.manifest_digest:
                return parent.replica_backup_id, encoded
        return "", None

    async def _wanted(self, client: TransferClient) -> list[bytes]:
        """Every chunk id the destination lacks (sorted); only ids the manifests name are served."""
        wanted: list[bytes] = []
        after, first = b"", True
        while True:
            page = await client.wanted(self.job.transfer_id, after, WANTED_PAGE)
            if first:
                first = False
                if not self.job.present_known:  # the first attempt's answer: later ones count our own chunks
                    self.job.present_bytes, self.job.chunks_present = page.present_bytes, page.present_chunks
                    self.job.present_known = True
                # The namespace's dictionaries the destination holds already: chunk ids do not say which
                # dictionary a chunk uses, so the source sends the others as its chunks need them.
                self.dictionaries_there = {dictionary_tag(bytes(d)) for d in page.dictionary_ids}
            for chunk in page.chunk_ids:
                if chunk not in self.raw_sizes:
                    raise ChunkNotReplicatedError(f"the destination asked for chunk {bytes(chunk).hex()}, which no "
                                                  f"manifest of this transfer names")
            wanted.extend(bytes(c) for c in page.chunk_ids)
            if page.done or not page.chunk_ids:
                break
            after = wanted[-1]
        await self.persist(progress=True)
        log.info("want-list", extra={"fields": {"task": self.task.task_id, "wanted": len(wanted),
                                                "named": len(self.raw_sizes), "transfer": self.job.transfer_id}})
        return wanted

    async def _send_chunks(self, client: TransferClient, index, source: ChunkSource, wanted: list[bytes]) -> None:
        ctx = self.ctx
        vault_id = self.backup.vault_id
        locations = await asyncio.to_thread(index.locations, vault_id, wanted) if wanted else {}
        stored = {chunk: where[2] for chunk, where in locations.items()}
        self.total = max(self.total, sum(stored.values()))
        done = self.total - sum(stored.values())
        ctx.resume_at(done)
        await asyncio.to_thread(ctx.progress, done, self.total)
        if not wanted:
            return
        order = send_order(wanted, locations)
        stream = ChunkStream(self, client, stored, done, dict(order))
        batches = read_batches([chunk for chunk, _ in order], stored)
        # The next batch is read while this one goes out: the store and the wire both stay busy, and at most two
        # batches are held (one going out, one read or waiting for it). One reading thread: glibc gives each
        # thread that allocates an arena of its own, and batches read by whichever pool thread was free left a
        # batch's worth of freed memory in each (worker growth on a 2 GiB full replica: 55-79 MiB; 41-50 MiB
        # with one reading thread).
        loop = asyncio.get_running_loop()
        reader = ThreadPoolExecutor(1, thread_name_prefix="cbr-replica-read")

        def read(ids: list[bytes]) -> asyncio.Future:
            return loop.run_in_executor(reader, self._read_wire, source, ids, locations)

        reading = read(batches[0])
        try:
            for following in [*batches[1:], None]:
                await self.controls.refresh_rate()
                await stream.send(await reading)
                if following is not None:
                    reading = read(following)
            await stream.finish(read)
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            stream.close()
            reader.shutdown(wait=False)

    async def _commit(self, client: TransferClient) -> rpb.CommitTransferResponse:
        expected = [rpb.ManifestDigest(source_backup_id=p.backup.backup_id, digest=p.digest)
                    for p in self.parts if p.encoded]
        response = await client.commit(self.job.transfer_id, expected)
        replica = {r.source_backup_id: bytes(r.digest) for r in response.replica}
        differ = [e.source_backup_id for e in expected if replica.get(e.source_backup_id) != e.digest]
        if differ:
            raise ReplicaDigestsDifferError(f"the replica's manifest digests differ from the source's for "
                                            f"{', '.join(differ)}")
        return response

    async def abort(self, client: TransferClient, reason: str) -> None:
        if not self.job.transfer_id:
            return
        try:
            await client.abort(self.job.transfer_id, reason)
        except Exception as exc:  # noqa: BLE001 - the destination's idle expiry drops it otherwise
            log.warning("aborting the transfer failed; the destination expires it",
                        extra={"fields": {"task": self.task.task_id, "error": repr(exc)[:300]}})
        await self.persist()

    # The job row and the record

    async def persist(self, progress: bool = False, **values) -> None:
        """Writes the counters (and values) to the job row; with progress, at most every PROGRESS_EVERY s, an
        update to the record as well."""
        job = self.job
        job.metadata_bytes += self._metadata
        self._metadata = 0
        async with self.ctx.make_uow() as uow:
            await replication_jobs_of(uow).update(
                self.task.task_id, transfer_id=job.transfer_id, present_known=job.present_known,
                sent_through=job.sent_through, **job.counters(), **values)
            now = time.monotonic()
            if progress and now - self._last_progress >= PROGRESS_EVERY:
                self._last_progress = now
                done, total = self.ctx.progress_values()
                await publish_update(uow, self.task, job, "progress", bytes_done=done, bytes_total=total)
            await uow.commit()

    async def _complete(self, replica: rpb.CommitTransferResponse) -> None:
        task, job = self.task, self.job
        digests = {r.source_backup_id: bytes(r.digest) for r in replica.replica}
        source_digest = combined_digest([p.digest for p in self.parts if p.encoded])
        replica_digest = combined_digest([digests[p.backup.backup_id] for p in self.parts if p.encoded])
        job.metadata_bytes += self._metadata
        self._metadata = 0
        job.destination_backup_id = replica.backup_id
        async with self.ctx.make_uow() as uow:
            await check_still_mine(uow, task)
            await replication_jobs_of(uow).update(
                task.task_id, **job.counters(), sent_through=job.sent_through, destination_backup_id=replica.backup_id,
                source_manifest_digest=source_digest, replica_manifest_digest=replica_digest)
            done, total = self.ctx.progress_values()
            await lifecycle.finish(uow, task, "success", bytes_done=done, bytes_total=total, extra_info=dict(
                task.extra_info, destination_backup_id=replica.backup_id, transfer_id=job.transfer_id,
                **{name: str(value) for name, value in job.counters().items()}, **self.controls.counters()))
            await publish_update(uow, task, job, "completed", bytes_done=max(done, total), bytes_total=total,
                                 destination_backup_id=replica.backup_id, source_manifest_digest=source_digest,
                                 replica_manifest_digest=replica_digest)
            await uow.commit()


class ChunkStream:
    """One PutChunks stream: messages in send order within the window, acknowledgements read beside them, and each
    chunk the destination rejects as damaged sent once more."""

    def __init__(self, sender: Sender, client: TransferClient, stored: dict[bytes, int], done: int,
                 positions: dict[bytes, bytes]):
        self.sender = sender
        self.client = client
        self.stored = stored  # the source's stored size of each chunk: progress
        self.positions = positions  # each chunk's place in the send order (send_order): what sent_through holds
        self.done = done
        self.call = client.put_chunks()
        self.window = SendWindow()
        self.seq = 0
        self.rejected: list[tuple[bytes, str]] = []
        self.resent: set[bytes] = set()
        self._acked = asyncio.Event()
        self._last_ack = time.monotonic()
        self._reader = asyncio.create_task(self._read_acks())
        self._outgoing: asyncio.Task | None = None  # the batch being sent (send)

    def close(self) -> None:
        for task in (self._reader, self._outgoing):
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: what ended the stream was raised already, or is moot now
        self.call.cancel()

    async def _read_acks(self) -> None:
        try:
            while True:
                ack = await self.call.read()
                if ack is grpc.aio.EOF:
                    return
                self.sender.count_metadata(ack.ByteSize(), answer=True)
                self.window.acked(ack.durable_through_seq)
                self.rejected.extend((bytes(r.chunk_id), r.code) for r in ack.rejected)
                self._last_ack = time.monotonic()
                self._acked.set()
        finally:
            self._acked.set()

    def _reader_failed(self) -> None:
        """Raises what ended the acknowledgements (the peer broke off), if they ended."""
        if not self._reader.done():
            return
        exc = self._reader.exception() if not self._reader.cancelled() else None
        if exc is not None:
            if isinstance(exc, grpc.aio.AioRpcError):
                raise peer_error(exc, self.client.peer.name) from None
            raise exc
        if not self.window.drained:
            raise PeerDownError(f"region {self.client.peer.name} ended the chunk stream early")

    async def _wait(self, ready) -> None:
        """Waits, acknowledgements arriving meanwhile, until ready() holds."""
        while not ready():
            self._reader_failed()
            self.sender.check_cancelled()
            if time.monotonic() - self._last_ack > ACK_STALL:
                raise PeerDownError(f"region {self.client.peer.name} acknowledged nothing for {ACK_STALL:.0f} s")
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), 0.5)
            except TimeoutError:
                pass

    async def send(self, wires: list[tuple[bytes, WireForm]], resend: bool = False) -> None:
        """Hands the batch's chunks to the stream. The job row is written ahead once per batch, counters and
        sent_through as they will be once the whole batch has left (17.9), while the batch before is still going
        out: the write's round trip (a commit, ~10 ms) is off the sending path, and the batch's first message
        never leaves before it."""
        sender, job = self.sender, self.sender.job
        await sender.send_dictionaries(self.client, wires)
        messages = []
        for message in split_messages([len(w.payload) for _, w in wires]):
            chunks = [wires[i] for i in message]
            for chunk, wire in chunks:
                n = len(wire.payload)
                if resend or (job.sent_through is not None and self.positions[chunk] <= job.sent_through):
                    job.resent_bytes += n
                else:
                    job.chunk_bytes_sent += n
                    job.chunks_sent += 1
            if not resend:
                job.sent_through = max(job.sent_through or b"", self.positions[chunks[-1][0]])
            self.seq += 1
            messages.append((self.seq, chunks))
        await sender.persist(progress=True)  # the write-ahead; the batch before may still be going out
        await self._sent()
        self._outgoing = asyncio.create_task(self._send_messages(messages, resend))

    async def _send_messages(self, messages: list, resend: bool) -> None:
        """One batch's messages, in order, each encoded as it goes, within the window and the pace."""
        sender = self.sender
        for seq, chunks in messages:
            request = encode_put_chunks(seq, [(chunk, sender.raw_sizes[chunk], w.flags, w.tag, w.payload)
                                              for chunk, w in chunks],
                                        transfer_id=sender.job.transfer_id if seq == 1 else "")
            size, payload = len(request), sum(len(w.payload) for _, w in chunks)
            sender.count_metadata(size - payload)
            await self._wait(lambda: self.window.room_for(size))
            await sender.controls.pace(payload)  # the pace counts chunk payload on the wire (17.11)
            self.window.sent(seq, size)
            await self._write(request)
            del request
            if not resend:
                self.done += sum(self.stored.get(chunk, 0) for chunk, _ in chunks)
            chunks.clear()  # the payloads, let go as soon as they are on their way
            await asyncio.to_thread(sender.ctx.progress, min(self.done, sender.total), sender.total)

    async def _sent(self) -> None:
        """Waits until the batch going out has left (raising what stopped it)."""
        if self._outgoing is not None:
            outgoing, self._outgoing = self._outgoing, None
            await outgoing

    async def _flush(self) -> None:
        """Asks the destination to make what it holds durable now: the sender waits for it (else the receiver's
        timer would, up to 2 s at the end of every transfer)."""
        if self.window.drained:
            return
        request = encode_put_chunks(self.seq + 1, flush=True)
        size = len(request)
        self.sender.count_metadata(size)
        self.seq += 1
        self.window.sent(self.seq, size)
        await self._write(request)

    async def _write(self, request) -> None:
        try:
            await self.call.write(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, self.client.peer.name) from None
        except Exception:  # the call ended (the peer broke off): what the reader saw says why
            self._reader_failed()
            raise PeerDownError(f"region {self.client.peer.name} closed the chunk stream") from None

    async def finish(self, reread) -> None:
        """Until everything sent is durable: chunks rejected as damaged are read and sent once more (a second
        rejection fails the job); then the stream is closed."""
        await self._sent()
        while True:
            await self._flush()
            await self._wait(lambda: self.window.drained or self.rejected)
            if self.rejected:
                again = []
                for chunk, code in self.rejected:
                    if code == DICTIONARY_MISSING:
                        self.sender.dictionaries_there.clear()  # sent again with the chunk
                    elif code != REJECTED_CHECK:
                        continue  # not wanted (any more): nothing to send
                    if chunk in self.resent:
                        raise ChunkRejectedTwiceError(f"the destination rejected chunk {chunk.hex()} twice; the "
                                                      f"source's copy is damaged (a verify of the backup finds it)")
                    again.append(chunk)
                self.rejected = []
                if again:
                    self.resent.update(again)
                    await self.send(await reread(sorted(again)), resend=True)
                    await self._sent()
                continue
            break
        await self.call.done_writing()
        await asyncio.wait([self._reader])
        self._reader_failed()


def source_backup(backup: Backup) -> rpb.SourceBackup:
    """What the destination needs of the source backup (and a server's disks) to make the replica's rows."""
    message = rpb.SourceBackup(
        backup_id=backup.backup_id, project_id=backup.project_id, vault_id=backup.vault_id,
        checkpoint_id=backup.checkpoint_id, name=backup.name, description=backup.description,
        resource_id=backup.resource_id, resource_name=backup.resource_name,
        resource_type=enum_value(common_pb2.ObjectType, backup.resource_type),
        resource_size_bytes=backup.resource_size_bytes, incremental=backup.incremental,
        auto_trigger=backup.auto_trigger, logical_bytes=backup.logical_bytes, device=backup.device,
        stored_bytes=backup.stored_bytes,
        children=[source_backup(child) for child in manifest_parts(backup)] if backup.resource_type == "server"
        else [])
    if backup.created_time is not None:
        message.created_time.FromDatetime(backup.created_time)
    if backup.protected_time is not None:
        message.protected_time.FromDatetime(backup.protected_time)
    return message

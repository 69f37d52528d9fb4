"""The destination's use cases of RegionTransferService (DESIGN.md 17.5-17.8), in the write order of 17.7: every
check before the first write; chunks durable (pack put and flushed) before their index rows, index rows before the
acknowledgement; manifests and records durable before the one transaction that lists the replica."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import zstandard
from google.protobuf import json_format

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr.replication.v1 import replication_pb2
from cbr_backup.adapters.chunk_index import TOUCH_MARGIN
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import VaultDirectory
from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.disk_backup import manifest_key
from cbr_backup.datapath.errors import ChunkCorruptError, ManifestCorruptError
from cbr_backup.datapath.manifest_delta import ManifestDeltaError, apply_delta, manifest_digest, namespace_key_check
from cbr_backup.datapath.packs import PACK_ID_SIZE
from cbr_backup.datapath.tree_manifest import TreeManifest
from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup, Checkpoint, check_backup_name, check_description
from cbr_backup.domain.replicas import (ManifestParts, SourceBackup, check_id, check_limit, check_record_id,
                                        check_replica_room, check_replica_vault, check_source)
from cbr_backup.keys import KeyProvider
from cbr_backup.service import lifecycle
from cbr_backup.service.vault_keys import open_vault_keys
from cbr_backup.transfer.chunks import ChunkSink, Rejection, Sealed, WireChunk, adopt_packs
from cbr_backup.transfer.namespaces import (NamespaceKeys, open_namespace_keys, put_namespace_object, staging_key,
                                            staging_prefix, wrap_namespace_key)
from cbr_backup.transfer.repository import TransferRepository
from cbr_backup.transfer.staged import chunk_sizes_of, load_staged
from cbr_backup.worker.backup_records import write_backup_records
from cbr_common.db import utcnow
from cbr_common.proto_enums import enum_value

MAX_MANIFEST_BYTES = 1 << 30      # a 1 TiB disk at 128 KiB is ~270 MB of manifest
MAX_DICTIONARY_BYTES = 4 << 20
FLUSH_BYTES = 16 << 20            # received chunk bytes per durable pack (DESIGN.md 17.7 step 5)
FLUSH_SECONDS = 2.0
INBOX_MESSAGES = 4              # received messages waiting to be checked
_END = object()


@dataclass(frozen=True)
class BeginTransfer:
    record_id: str
    source_region: str
    source: SourceBackup
    project_id: str
    vault_id: str
    name: str
    description: str
    source_vault_id: str
    key_check: bytes
    retention: dict | None = None


@dataclass(frozen=True)
class Staged:
    source_backup_id: str
    digest: bytes
    size_bytes: int


@dataclass(frozen=True)
class Parent:
    resource_id: str
    replica_backup_id: str
    source_backup_id: str
    digest: bytes


@dataclass
class BeginResult:
    transfer_id: str
    resumable: bool = False
    committed_backup_id: str = ""
    namespace_known: bool = False
    parents: list[Parent] = field(default_factory=list)
    staged: list[Staged] = field(default_factory=list)


@dataclass(frozen=True)
class ManifestPart:
    transfer_id: str
    source_backup_id: str
    kind: str                 # disk | tree | server ("" for an unknown kind)
    parent_replica_backup_id: str
    offset: int
    data: bytes
    last: bool


@dataclass(frozen=True)
class WantedPage:
    chunk_ids: list[bytes]
    dictionary_ids: list[bytes]
    done: bool
    present_bytes: int
    present_chunks: int


@dataclass(frozen=True)
class ChunkMessage:
    transfer_id: str
    seq: int
    chunks: list[WireChunk]
    flush: bool = False  # the sender waits for this acknowledgement: durable now, not on the timer


@dataclass(frozen=True)
class Ack:
    durable_through_seq: int
    rejected: list[Rejection]
    stored_bytes: int


@dataclass(frozen=True)
class Committed:
    backup_id: str
    replica: dict[str, bytes]  # source backup id -> the replica manifest's digest


class TransferReceiver:
    """RegionTransferService's logic for one destination region."""

    def __init__(self, make_uow: Callable[[], BackupUnitOfWork], vaults: VaultDirectory, key_provider: KeyProvider,
                 store: Callable[[], object], open_index: Callable[[], object], flush_bytes: int = FLUSH_BYTES,
                 flush_seconds: float = FLUSH_SECONDS):
        self._uow = make_uow
        self._vaults = vaults
        self._keys = key_provider
        self._store_factory = store
        self._store = None
        self._open_index = open_index
        self.flush_bytes = flush_bytes
        self.flush_seconds = flush_seconds

    @property
    def store(self):
        if self._store is None:
            self._store = self._store_factory()  # the API process opens the chunk store only once a peer sends
        return self._store

    # CheckDestination and BeginTransfer

    async def check_destination(self, peer: str, source_region: str, project_id: str, vault_id: str,
                                resource_type: str, size_bytes: int) -> str:
        _same_region(peer, source_region)
        vault = await self._replica_vault(project_id, vault_id, resource_type)
        async with self._uow() as uow:
            used = await uow.backups.used_bytes(vault_id)
        check_replica_room(used, vault.size_gb, vault.auto_expand, size_bytes)
        return vault.name

    async def begin(self, peer: str, cmd: BeginTransfer) -> BeginResult:
        _same_region(peer, cmd.source_region)
        check_record_id(cmd.record_id)
        check_id(cmd.source_vault_id, "source_vault_id")
        source = check_source(cmd.source, cmd.source_vault_id)
        if len(cmd.key_check) != 32:
            raise errors.InvalidTransferRequestError("namespace_key_check must be 32 bytes")
        name = cmd.name or source.name
        try:
            check_backup_name(name)
            check_description(cmd.description)
        except (errors.InvalidNameError, errors.InvalidDescriptionError) as exc:
            raise errors.InvalidTransferRequestError(f"the replica's {exc.message}") from None
        async with self._uow() as uow:
            existing = await TransferRepository(uow.session).transfer_for_record(peer, cmd.record_id)
        if existing is not None:
            return await self._resumed(existing)
        vault = await self._replica_vault(cmd.project_id, cmd.vault_id, source.resource_type)
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            check_replica_room(await uow.backups.used_bytes(cmd.vault_id), vault.size_gb, vault.auto_expand, 0)
            namespace = await repo.namespace(cmd.vault_id, peer, cmd.source_vault_id)
            if namespace is not None and bytes(namespace["key_check"]) != cmd.key_check:
                raise errors.NamespaceKeyMismatchError(
                    f"source vault {cmd.source_vault_id} of {peer} has another id key here than the one checked")
            await open_vault_keys(uow, self._keys, cmd.vault_id, vault.encrypted)  # the replica is sealed with them
            now = utcnow()
            transfer_id = str(uuid.uuid4())
            inserted = await repo.add_transfer(
                transfer_id=transfer_id, source_region=peer, record_id=cmd.record_id,
                source_project_id=source.project_id, source_vault_id=cmd.source_vault_id,
                source_backup_id=source.backup_id, source_backup=source.to_json(), project_id=cmd.project_id,
                vault_id=cmd.vault_id, namespace_id=namespace["namespace_id"] if namespace else str(uuid.uuid4()),
                key_check=cmd.key_check, name=name, description=cmd.description, retention=cmd.retention,
                state="open", wanted_ready=False, chunks_received=0, stored_bytes=0, present_chunks=0,
                present_bytes=0, rejected_chunks=0, started_time=now, last_activity_time=now)
            await uow.commit()
        if not inserted:  # a concurrent begin of the same record won
            async with self._uow() as uow:
                existing = await TransferRepository(uow.session).transfer_for_record(peer, cmd.record_id)
            return await self._resumed(existing)
        async with self._uow() as uow:
            transfer = await TransferRepository(uow.session).get_transfer(transfer_id)
            return BeginResult(transfer_id, namespace_known=namespace is not None,
                               parents=await self._parents(uow, transfer) if namespace is not None else [])

    async def _resumed(self, transfer: dict) -> BeginResult:
        if transfer["state"] == "committed":
            return BeginResult(transfer["transfer_id"], committed_backup_id=transfer["backup_id"])
        if transfer["state"] != "open":
            raise errors.TransferNotFoundError(f"the transfer of record {transfer['record_id']} was aborted")
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            namespace = await repo.namespace_by_id(transfer["vault_id"], transfer["namespace_id"])
            staged = [_staged(r) for r in await repo.staged(transfer["transfer_id"])]
            parents = await self._parents(uow, transfer) if namespace is not None else []
        if namespace is not None and transfer["wanted_ready"]:
            await self._adopt(transfer)
        return BeginResult(transfer["transfer_id"], resumable=True, namespace_known=namespace is not None,
                           parents=parents, staged=staged)

    async def _adopt(self, transfer: dict) -> None:
        """The packs an earlier attempt put without their rows are indexed now (checked as on arrival), so the
        want-list asks only for what is not durable here."""
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            pack_ids = await repo.packs(transfer["transfer_id"])
            wanted = await repo.wanted_all(transfer["transfer_id"]) if pack_ids else {}
            keys = await self._namespace_keys(uow, transfer) if wanted else None
        if not wanted:
            return
        dictionaries = VaultDictionaries(self.store, transfer["vault_id"], keys)
        codec = ChunkCodec(keys, dictionaries=dictionaries.by_tag)
        async with self._vault_lock(transfer["vault_id"]) as index:
            adopted = await asyncio.to_thread(adopt_packs, self.store, index, codec, transfer["vault_id"], pack_ids,
                                              wanted)
            async with self._uow() as uow:
                await TransferRepository(uow.session).drop_wanted(transfer["transfer_id"], adopted)
                await uow.commit()

    async def _parents(self, uow, transfer: dict) -> list[Parent]:
        source = SourceBackup.from_json(transfer["source_backup"])
        resources = {b.resource_id for b in (source, *source.children)}
        rows = await TransferRepository(uow.session).parents(transfer["vault_id"], transfer["namespace_id"],
                                                             sorted(resources))
        return [Parent(r["resource_id"], r["backup_id"], r["source_backup_id"] or "",
                       bytes(r["manifest_digest"] or b"")) for r in rows]

    async def _replica_vault(self, project_id: str, vault_id: str, resource_type: str):
        check_id(vault_id, "destination_vault_id")
        if not project_id or len(project_id) > 64:
            raise errors.InvalidTransferRequestError("destination_project_id must be 1-64 characters")
        vault = await self._vaults.get(project_id, vault_id)
        if vault is None or vault.project_id != project_id:
            raise errors.ReplicaVaultNotFoundError(f"vault {vault_id} not found in project {project_id}")
        check_replica_vault(vault.protect_type, vault.object_type, resource_type)
        return vault

    # The namespace's key

    async def put_namespace_key(self, peer: str, transfer_id: str, id_key: bytes) -> None:
        if len(id_key) != 32:
            raise errors.InvalidTransferRequestError("id_key must be 32 bytes")
        transfer = await self._open(peer, transfer_id)
        check = namespace_key_check(id_key)
        if check != bytes(transfer["key_check"]):
            raise errors.NamespaceKeyMismatchError("id_key does not match the namespace_key_check the transfer began "
                                                   "with")
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            namespace = await repo.namespace(transfer["vault_id"], peer, transfer["source_vault_id"])
            if namespace is None:
                kek_id, wrapped = wrap_namespace_key(self._keys, transfer["vault_id"], transfer["namespace_id"], id_key)
                await repo.add_namespace(vault_id=transfer["vault_id"], namespace_id=transfer["namespace_id"],
                                         source_region=peer, source_vault_id=transfer["source_vault_id"],
                                         kek_id=kek_id, wrapped_id_key=wrapped, key_check=check)
                namespace = await repo.namespace(transfer["vault_id"], peer, transfer["source_vault_id"])
            if bytes(namespace["key_check"]) != check:
                raise errors.NamespaceKeyMismatchError(
                    f"source vault {transfer['source_vault_id']} of {peer} has another id key here")
            if namespace["namespace_id"] != transfer["namespace_id"]:  # another transfer's insert won the race
                await repo.update_transfer(transfer_id, namespace_id=namespace["namespace_id"])
            await uow.commit()

    async def _namespace_keys(self, uow, transfer: dict) -> NamespaceKeys:
        vault_keys = await open_vault_keys(uow, self._keys, transfer["vault_id"], True)
        keys = await open_namespace_keys(uow, self._keys, vault_keys, transfer["vault_id"], transfer["namespace_id"])
        if keys is None:
            raise errors.NamespaceKeyMismatchError("the namespace's id key was not sent yet (PutNamespaceKey)")
        return keys

    async def _vault_keys(self, transfer: dict) -> VaultKeys:
        async with self._uow() as uow:
            return await open_vault_keys(uow, self._keys, transfer["vault_id"], True)

    # Manifests

    async def put_manifests(self, peer: str, parts: AsyncIterator[ManifestPart]) -> list[Staged]:
        transfer, expected, assembling = None, {}, {}
        async for part in parts:
            if transfer is None:
                transfer = await self._open(peer, part.transfer_id)
                expected = SourceBackup.from_json(transfer["source_backup"]).parts()
            elif part.transfer_id and part.transfer_id != transfer["transfer_id"]:
                raise errors.InvalidManifestError("one stream carries one transfer's manifests")
            kind = expected.get(part.source_backup_id)
            if kind is None:
                raise errors.InvalidManifestError(f"{part.source_backup_id} is not a backup of this transfer")
            if part.kind != kind:
                raise errors.InvalidManifestError(f"backup {part.source_backup_id}'s manifest crosses as {kind}")
            parts_of = assembling.setdefault(part.source_backup_id,
                                             ManifestParts(kind, part.parent_replica_backup_id))
            parts_of.add(part.kind, part.parent_replica_backup_id, part.offset, part.data, part.last,
                         MAX_MANIFEST_BYTES)
        if transfer is None:
            raise errors.InvalidManifestError("no manifest parts")
        unfinished = sorted(b for b, p in assembling.items() if not p.complete)
        if unfinished:
            raise errors.InvalidManifestError(f"the manifest of {unfinished[0]} ended without its last part")
        async with self._uow() as uow:
            staged = {r["source_backup_id"]: r for r in await TransferRepository(uow.session).staged(
                transfer["transfer_id"])}
        keys = await self._vault_keys(transfer)
        rebuilt = {}
        for backup_id, parts_of in sorted(assembling.items()):  # every check before the first write
            if backup_id not in staged:
                rebuilt[backup_id] = await self._rebuild(transfer, keys, parts_of)
        if rebuilt:
            await asyncio.to_thread(self._stage, transfer, keys, rebuilt)
            async with self._uow() as uow:
                repo = TransferRepository(uow.session)
                for backup_id, (data, digest) in rebuilt.items():
                    await repo.add_staged(transfer_id=transfer["transfer_id"], source_backup_id=backup_id,
                                          kind=assembling[backup_id].kind, digest=digest, size_bytes=len(data),
                                          parent_replica_backup_id=assembling[backup_id].parent_replica_backup_id
                                          or None)
                await repo.update_transfer(transfer["transfer_id"])
                await uow.commit()
        async with self._uow() as uow:
            return [_staged(r) for r in await TransferRepository(uow.session).staged(transfer["transfer_id"])]

    async def _rebuild(self, transfer: dict, keys: VaultKeys, parts_of: ManifestParts) -> tuple[bytes, bytes]:
        """(the manifest's bytes, its digest), checked; a server's record has neither."""
        data = bytes(parts_of.data)
        if parts_of.kind == "server":
            if data:
                raise errors.InvalidManifestError("a server backup's record carries no manifest")
            return b"", b""
        if parts_of.kind == "tree":
            try:
                manifest = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_MANIFEST_BYTES)
                TreeManifest.decode(manifest)  # checks its own digest and every rule
            except (zstandard.ZstdError, ManifestCorruptError) as exc:
                raise errors.InvalidManifestError(f"tree manifest: {exc}") from None
            return manifest, manifest_digest(manifest)
        parent = None
        if parts_of.parent_replica_backup_id:
            parent = await self._parent_manifest(transfer, keys, parts_of.parent_replica_backup_id)
        try:
            manifest = apply_delta(data, parent)
        except ManifestDeltaError as exc:
            raise errors.InvalidManifestError(f"manifest delta: {exc}") from None
        return manifest, manifest_digest(manifest)

    async def _parent_manifest(self, transfer: dict, keys: VaultKeys, replica_backup_id: str) -> bytes:
        async with self._uow() as uow:
            offered = {p.replica_backup_id for p in await self._parents(uow, transfer)}
            parent = await uow.backups.get_backup(transfer["project_id"], replica_backup_id) \
                if replica_backup_id in offered else None
        if parent is None:
            raise errors.InvalidManifestError(f"{replica_backup_id} is not a replica offered as a parent")
        key = manifest_key(transfer["vault_id"], parent.manifest_id)
        try:
            value = await asyncio.to_thread(self.store.get, key)
            return ChunkCodec(keys).unseal(value, key.encode(), key)
        except (ChunkNotFoundError, ChunkCorruptError) as exc:
            raise errors.InvalidManifestError(f"the parent replica's manifest is unreadable: {exc}") from None

    def _stage(self, transfer: dict, keys: VaultKeys, rebuilt: dict[str, tuple[bytes, bytes]]) -> None:
        codec = ChunkCodec(keys)
        for backup_id, (data, _) in rebuilt.items():
            if not data:
                continue
            key = staging_key(transfer["vault_id"], transfer["transfer_id"], backup_id)
            value = codec.seal(data, key.encode())
            if not self.store.put(key, value):  # an earlier attempt's, never recorded: replaced
                self.store.delete(key)
                self.store.put(key, value)
        self.store.flush()

    # The want-list and dictionaries

    async def list_wanted(self, peer: str, transfer_id: str, after: bytes, limit: int) -> WantedPage:
        check_limit(limit)
        if after and len(after) != 32:
            raise errors.InvalidTransferRequestError("after_id must be empty or 32 bytes")
        transfer = await self._open(peer, transfer_id)
        if not transfer["wanted_ready"]:
            transfer = await self._compute_wanted(transfer)
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            page = await repo.wanted_page(transfer_id, after or b"", limit)
            known = await repo.dictionaries(transfer["vault_id"], transfer["namespace_id"]) if not after else set()
        first = not after
        return WantedPage([d for d, _ in page], sorted(known), len(page) < limit,
                          transfer["present_bytes"] if first else 0, transfer["present_chunks"] if first else 0)

    async def _compute_wanted(self, transfer: dict) -> dict:
        """Every id the staged manifests name, less those the index holds (and touches): DESIGN.md 17.5."""
        sizes = await self._named_chunks(transfer)
        since = transfer["started_time"] - TOUCH_MARGIN
        async with self._vault_lock(transfer["vault_id"]) as index:
            present, present_bytes = await asyncio.to_thread(_present, index, transfer["vault_id"], sizes, since)
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            latest = await repo.get_transfer(transfer["transfer_id"], for_update=True)
            if not latest["wanted_ready"]:
                await repo.add_wanted(transfer["transfer_id"], {d: r for d, r in sizes.items() if d not in present})
                await repo.update_transfer(transfer["transfer_id"], wanted_ready=True, present_chunks=len(present),
                                           present_bytes=present_bytes)
            await uow.commit()
        async with self._uow() as uow:
            return await TransferRepository(uow.session).get_transfer(transfer["transfer_id"])

    async def _named_chunks(self, transfer: dict) -> dict[bytes, int]:
        """id -> raw size of every chunk the staged manifests name; every manifest must be staged."""
        async with self._uow() as uow:
            staged = await TransferRepository(uow.session).staged(transfer["transfer_id"])
        expected = SourceBackup.from_json(transfer["source_backup"]).parts()
        missing = sorted(set(expected) - {r["source_backup_id"] for r in staged})
        if missing:
            raise errors.ChunksMissingError(f"the manifest of {missing[0]} is not staged yet (PutManifests)")
        keys = await self._vault_keys(transfer)
        manifests = await asyncio.to_thread(load_staged, self.store, keys, transfer, staged)
        return chunk_sizes_of(manifests.values())

    async def put_dictionary(self, peer: str, transfer_id: str, dictionary_id: bytes, content: bytes) -> None:
        if len(dictionary_id) != 32 or not 0 < len(content) <= MAX_DICTIONARY_BYTES:
            raise errors.InvalidTransferRequestError(
                f"dictionary_id must be 32 bytes and content 1..{MAX_DICTIONARY_BYTES} bytes")
        transfer = await self._open(peer, transfer_id)
        async with self._uow() as uow:
            keys = await self._namespace_keys(uow, transfer)
            known = await TransferRepository(uow.session).dictionaries(transfer["vault_id"], transfer["namespace_id"])
        if ChunkCodec(keys).chunk_id(content) != dictionary_id:
            raise errors.DictionaryCheckFailedError("the dictionary's content does not match its id")
        if dictionary_id in known:
            return
        dictionaries = VaultDictionaries(self.store, transfer["vault_id"], keys)
        await asyncio.to_thread(lambda: (dictionaries.create(content), self.store.flush()))
        async with self._uow() as uow:
            await TransferRepository(uow.session).add_dictionary(transfer["vault_id"], transfer["namespace_id"],
                                                                 dictionary_id)
            await uow.commit()

    # Chunks

    async def put_chunks(self, peer: str, messages: AsyncIterator[ChunkMessage]) -> AsyncIterator[Ack]:
        """Checks, packs and indexes the chunks; acknowledges a message once its chunks are durable and indexed.
        A pack is sealed every flush_bytes received or flush_seconds after its first chunk, and at the end. A sealed
        pack is written while the next messages are checked (at most one being written, acknowledged in order):
        the disk and the CPUs stay busy together."""
        acks: asyncio.Queue = asyncio.Queue()
        stream = _ChunkStream(self, peer, messages, acks)
        task = asyncio.create_task(stream.run())
        try:
            while True:
                item = await acks.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await stream.stop(task)

    async def _sink(self, transfer: dict) -> ChunkSink:
        async with self._uow() as uow:
            keys = await self._namespace_keys(uow, transfer)
        if not transfer["wanted_ready"]:
            raise errors.ChunkNotWantedError("no want-list yet: stage the manifests and list the wanted chunks first")
        dictionaries = VaultDictionaries(self.store, transfer["vault_id"], keys)
        codec = ChunkCodec(keys, dictionaries=dictionaries.by_tag)
        return await asyncio.to_thread(ChunkSink.open, self.store, self._open_index, codec, transfer["vault_id"],
                                       dictionaries.by_tag)

    async def durable(self, transfer: dict, sink: ChunkSink, sealed: Sealed) -> Ack:
        """The sealed pack put and flushed, its rows indexed (ChunkSink.write); then, in one transaction, the
        want-list and counters; only then the acknowledgement."""
        pack_id = None
        if sealed.pack is not None:  # the pack's id recorded before its put, so a resume can adopt it (17.8)
            pack_id = os.urandom(PACK_ID_SIZE)
            async with self._uow() as uow:
                await TransferRepository(uow.session).add_pack(transfer["transfer_id"], pack_id)
                await uow.commit()
        batch = await asyncio.to_thread(sink.write, sealed, pack_id)
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            await repo.drop_wanted(transfer["transfer_id"], batch.indexed)
            await repo.add_counters(transfer["transfer_id"], len(batch.indexed), batch.stored_bytes,
                                    len(batch.rejected))
            await uow.commit()
        return Ack(batch.through_seq, batch.rejected, batch.stored_bytes)

    # Commit and abort

    async def commit(self, peer: str, transfer_id: str, expected: dict[str, bytes]) -> Committed:
        async with self._uow() as uow:
            transfer = await TransferRepository(uow.session).get_transfer(transfer_id)
        if transfer is not None and transfer["source_region"] == peer and transfer["state"] == "committed":
            return await self._committed(transfer)
        transfer = await self._open(peer, transfer_id)
        sizes = await self._named_chunks(transfer)
        # The vault's lock, shared, from the check to the rows, as a backup holds it: GC's exclusive pass must not
        # take the new manifests for dead ones before the rows name them.
        async with self._vault_lock(transfer["vault_id"]) as index:
            since = transfer["started_time"] - TOUCH_MARGIN  # (a) every named chunk indexed, and touched
            present, _ = await asyncio.to_thread(_present, index, transfer["vault_id"], sizes, since)
            if len(present) < len(sizes):
                async with self._uow() as uow:  # wanted again: lost since (GC, quarantine), or never sent
                    await TransferRepository(uow.session).add_wanted(
                        transfer_id, {d: r for d, r in sizes.items() if d not in present})
                    await uow.commit()
                raise errors.ChunksMissingError(f"{len(sizes) - len(present)} of the {len(sizes)} chunks the "
                                                f"manifests name are missing here")
            async with self._uow() as uow:
                staged = await TransferRepository(uow.session).staged(transfer_id)
            for row in staged:  # (b) the source's digests are the replica's
                if row["kind"] != "server" and expected.get(row["source_backup_id"]) != bytes(row["digest"]):
                    raise errors.DigestMismatchError(
                        f"the source's manifest digest of {row['source_backup_id']} differs from the replica's")
            source = SourceBackup.from_json(transfer["source_backup"])
            keys = await self._vault_keys(transfer)
            named = await asyncio.to_thread(self._part_chunks, transfer, keys, staged)
            run_id = uuid.uuid4().hex[:8]
            ids = {b.backup_id: str(uuid.uuid4()) for b in (source, *source.children)}
            manifests = {r["source_backup_id"]: f"{ids[r['source_backup_id']]}-{run_id}" for r in staged
                         if r["kind"] != "server"}
            await asyncio.to_thread(self._publish_manifests, transfer, keys, manifests)  # (c)
            async with self._uow() as uow:  # and the namespace's wrapped key, so a rebuild can read the replica
                namespace = await TransferRepository(uow.session).namespace_by_id(transfer["vault_id"],
                                                                                 transfer["namespace_id"])
            await asyncio.to_thread(put_namespace_object, self.store, namespace)
            async with self._uow() as uow:  # (d)
                repo = TransferRepository(uow.session)
                latest = await repo.get_transfer(transfer_id, for_update=True)
                if latest["state"] == "open":
                    await self._list_replica(uow, transfer, source, ids, manifests, staged, expected, named, keys,
                                             run_id)
                elif latest["state"] != "committed":  # committed: a racing commit won (these manifests are GC's)
                    raise errors.TransferNotFoundError(f"transfer {transfer_id} is {latest['state']}")
        await asyncio.to_thread(self._drop_staging, transfer)  # (e) what a crash leaves, GC's
        return await self._committed(await self._get(transfer_id))

    async def _list_replica(self, uow, transfer: dict, source: SourceBackup, ids: dict[str, str],
                            manifests: dict[str, str], staged: list[dict], expected: dict[str, bytes],
                            named: dict[str, set[bytes]], keys: VaultKeys, run_id: str) -> None:
        """One transaction: the replica's rows (available), the transfer committed, the event; the store's records
        durable before the commit (DESIGN.md 14.2)."""
        rows = await _replica_rows(uow, transfer, source, ids, manifests, staged, expected, named)
        top = rows[0]
        await uow.backups.add_checkpoint(Checkpoint(
            checkpoint_id=top.checkpoint_id, project_id=top.project_id, vault_id=top.vault_id, name=top.name,
            description=top.description, incremental=top.incremental, auto_trigger=top.auto_trigger,
            policy_id=top.policy_id, created_time=top.created_time))
        for row in rows:
            await uow.backups.add_backup(row)
        repo = TransferRepository(uow.session)
        await repo.update_transfer(transfer["transfer_id"], state="committed", backup_id=top.backup_id,
                                   ended_time=utcnow())
        await repo.forget_wanted(transfer["transfer_id"])
        await uow.publish(ev.BackupCompleted(
            project_id=top.project_id, backup_id=top.backup_id, vault_id=top.vault_id, resource_id=top.resource_id,
            resource_type=enum_value(common_pb2.ObjectType, top.resource_type), checkpoint_id=top.checkpoint_id,
            auto_trigger=top.auto_trigger, policy_id=top.policy_id, logical_bytes=top.logical_bytes,
            stored_bytes=top.stored_bytes, added_stored_bytes=top.added_bytes, incremental=top.incremental,
            image_type="replication", replica_retention=_retention_out(transfer["retention"])))
        await lifecycle.publish_usage(uow, top.project_id, top.vault_id)
        await write_backup_records(uow, self.store, keys, run_id, top.project_id, top.backup_id)
        await uow.commit()

    @contextlib.asynccontextmanager
    async def _vault_lock(self, vault_id: str):
        """A chunk index connection of its own holding the vault's lock shared (a crash drops both)."""
        index = await asyncio.to_thread(self._open_index)
        try:
            await asyncio.to_thread(index.lock_vault, vault_id, False)
            yield index
        finally:
            await asyncio.to_thread(index.close)

    def _publish_manifests(self, transfer: dict, keys: VaultKeys, manifests: dict[str, str]) -> None:
        codec = ChunkCodec(keys)
        for source_backup_id, manifest_id in manifests.items():
            staged = staging_key(transfer["vault_id"], transfer["transfer_id"], source_backup_id)
            data = codec.unseal(self.store.get(staged), staged.encode(), staged)
            key = manifest_key(transfer["vault_id"], manifest_id)
            if not self.store.put(key, codec.seal(data, key.encode())):
                raise FileExistsError(f"manifest {key} exists already")
        self.store.flush()

    def _part_chunks(self, transfer: dict, keys: VaultKeys, staged: list[dict]) -> dict[str, set[bytes]]:
        manifests = load_staged(self.store, keys, transfer, staged)
        return {backup_id: set(chunk_sizes_of([m])) for backup_id, m in manifests.items()}

    def _drop_staging(self, transfer: dict) -> None:
        with contextlib.suppress(Exception):
            for key in list(self.store.iterate(staging_prefix(transfer["vault_id"], transfer["transfer_id"]))):
                self.store.delete(key)

    async def _committed(self, transfer: dict) -> Committed:
        async with self._uow() as uow:
            staged = await TransferRepository(uow.session).staged(transfer["transfer_id"])
        return Committed(transfer["backup_id"], {r["source_backup_id"]: bytes(r["digest"]) for r in staged
                                                 if r["kind"] != "server"})

    async def abort(self, peer: str, transfer_id: str) -> None:
        transfer = await self._get(transfer_id)
        if transfer is None or transfer["source_region"] != peer:
            raise errors.TransferNotFoundError(f"transfer {transfer_id} not found")
        if transfer["state"] != "open":
            return  # aborted already, or committed: nothing to drop
        async with self._uow() as uow:
            repo = TransferRepository(uow.session)
            await repo.update_transfer(transfer_id, state="aborted", ended_time=utcnow())
            await repo.forget_wanted(transfer_id)
            await uow.commit()
        await asyncio.to_thread(self._drop_staging, transfer)

    # Lookups

    async def _get(self, transfer_id: str) -> dict | None:
        try:
            uuid.UUID(transfer_id)
        except ValueError:
            raise errors.TransferNotFoundError(f"transfer {transfer_id!r} not found") from None
        async with self._uow() as uow:
            return await TransferRepository(uow.session).get_transfer(transfer_id)

    async def _open(self, peer: str, transfer_id: str) -> dict:
        transfer = await self._get(transfer_id)
        if transfer is None or transfer["source_region"] != peer or transfer["state"] != "open":
            raise errors.TransferNotFoundError(f"transfer {transfer_id} not found, aborted or committed")
        return transfer


def _present(index, vault_id: str, sizes: dict[bytes, int], since: dt.datetime) -> tuple[set[bytes], int]:
    """The named chunks the index holds (each touched: GC leaves it now) and their stored bytes."""
    present = index.touch_existing(vault_id, list(sizes), since)
    return present, sum(where[2] for where in index.locations(vault_id, present).values())


def _same_region(peer: str, source_region: str) -> None:
    if source_region != peer:
        raise errors.NotAPeerError(f"a peer of region {peer} cannot send as region {source_region!r}")


def _staged(row: dict) -> Staged:
    return Staged(row["source_backup_id"], bytes(row["digest"]), row["size_bytes"])


async def _replica_rows(uow, transfer: dict, source: SourceBackup, ids: dict[str, str], manifests: dict[str, str],
                        staged: list[dict], expected: dict[str, bytes], named: dict[str, set[bytes]]) -> list[Backup]:
    """The replica's rows, available: the top backup first (a server's), then its disks."""
    now = utcnow()
    checkpoint_id = str(uuid.uuid4())
    retention = transfer["retention"] or {}
    by_source = {r["source_backup_id"]: r for r in staged}
    vault_id, started = transfer["vault_id"], transfer["started_time"]

    async def row(part: SourceBackup, parent_id: str, chunk_ids: set[bytes]) -> Backup:
        staged_row = by_source[part.backup_id]
        digest = bytes(staged_row["digest"]) or None
        stored, added = await uow.backups.stored_bytes_of(vault_id, chunk_ids, started)
        return Backup(
            backup_id=ids[part.backup_id], project_id=transfer["project_id"], checkpoint_id=checkpoint_id,
            vault_id=vault_id, resource_id=part.resource_id, resource_type=part.resource_type,
            name=transfer["name"], status="available", resource_name=part.resource_name,
            resource_size_bytes=part.resource_size_bytes, parent_id=parent_id, device=part.device,
            description=transfer["description"], image_type="replication",
            incremental=bool(staged_row["parent_replica_backup_id"]) or any(
                by_source[c.backup_id]["parent_replica_backup_id"] for c in part.children),
            auto_trigger=bool(retention), policy_id=retention.get("policy_id", ""),
            logical_bytes=part.logical_bytes,
            stored_bytes=stored, added_bytes=added,
            manifest_kind={"disk": "disk", "tree": "tree"}.get(staged_row["kind"], ""),
            manifest_id=manifests.get(part.backup_id, ""), created_time=now, updated_time=now, started_time=started,
            protected_time=now, namespace_id=transfer["namespace_id"], source_region=transfer["source_region"],
            source_project_id=transfer["source_project_id"], source_vault_id=transfer["source_vault_id"],
            source_backup_id=part.backup_id, replication_record_id=transfer["record_id"],
            source_manifest_digest=expected.get(part.backup_id) if digest else None, manifest_digest=digest)

    every = set().union(*named.values()) if named else set()
    rows = [await row(source, "", every)]
    for child in source.children:
        rows.append(await row(child, rows[0].backup_id, named.get(child.backup_id, set())))
    return rows


def _retention_out(retention: dict | None):
    """The travelled rule (auto replicas only), for the destination's policy service."""
    return json_format.ParseDict(retention, replication_pb2.ReplicaRetention()) if retention else None


class _ChunkStream:
    """One PutChunks stream at the destination: a reader of the messages, a checker that packs them, and at most
    one sealed pack being made durable; acknowledgements (or the error that ended the stream, then _END) go to acks
    in order."""

    def __init__(self, receiver: TransferReceiver, peer: str, messages: AsyncIterator[ChunkMessage],
                 acks: asyncio.Queue):
        self.receiver = receiver
        self.peer = peer
        self.messages = messages
        self.acks = acks
        self.inbox: asyncio.Queue = asyncio.Queue(maxsize=INBOX_MESSAGES)
        self.transfer: dict | None = None
        self.sink: ChunkSink | None = None
        self.writing: asyncio.Task | None = None

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._check_all()
            await self._settle()
            await self.acks.put(_END)
        except BaseException as exc:  # noqa: BLE001 - the stream's caller raises it
            await self.acks.put(exc)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self) -> None:
        """Reads the messages, opens the transfer on the first, and looks up which of each message's chunks the
        transfer wants: that database round trip (~10 ms) overlaps the check of the message before, where in the
        checker it held up every message."""
        last_seq = 0
        try:
            async for message in self.messages:
                if self.transfer is None:
                    self.transfer = await self.receiver._open(self.peer, message.transfer_id)
                elif message.transfer_id and message.transfer_id != self.transfer["transfer_id"]:
                    raise errors.InvalidTransferRequestError("one stream carries one transfer's chunks")
                if message.seq <= last_seq:
                    raise errors.InvalidTransferRequestError(f"seq {message.seq} after {last_seq}: seqs must grow")
                last_seq = message.seq
                wanted = {}
                if message.chunks:
                    async with self.receiver._uow() as uow:
                        wanted = await TransferRepository(uow.session).wanted_among(
                            self.transfer["transfer_id"], (c.chunk_id for c in message.chunks))
                await self.inbox.put((message, wanted))
            await self.inbox.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the checker
            await self.inbox.put(exc)

    async def _check_all(self) -> None:
        flush_bytes, flush_seconds = self.receiver.flush_bytes, self.receiver.flush_seconds
        loop = asyncio.get_running_loop()
        while True:
            sink = self.sink
            timeout = None if sink is None or not sink.pending else max(
                0.0, sink.pending_since + flush_seconds - loop.time())
            try:
                item = await asyncio.wait_for(self.inbox.get(), timeout)
            except asyncio.TimeoutError:
                await self._seal()
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            message, wanted = item
            if self.sink is None:
                self.sink = await self.receiver._sink(self.transfer)
            await asyncio.to_thread(self.sink.receive, message.seq, message.chunks, wanted, loop.time())
            # A full pack, a flush, or nothing to write (rejections are answered at once): sealed.
            if self.sink.pending_bytes >= flush_bytes or message.flush or not self.sink.pending:
                await self._seal()
        if self.sink is not None and (self.sink.pending or self.sink.rejected):
            await self._seal()

    async def _seal(self) -> None:
        """Seals what arrived and starts making it durable, once the pack before it is (acknowledged in order)."""
        await self._settle()
        self.writing = asyncio.create_task(self._write(self.sink.seal()))

    async def _write(self, sealed: Sealed) -> None:
        """The acknowledgement goes out as soon as the pack is durable, more messages arriving or not."""
        try:
            ack = await self.receiver.durable(self.transfer, self.sink, sealed)
        except BaseException as exc:  # noqa: BLE001 - ends the stream at once, not at the next seal
            await self.acks.put(exc)
            raise
        await self.acks.put(ack)

    async def _settle(self) -> None:
        """Waits until the pack being written is durable (a cancelled stream still lets it finish: stop)."""
        if self.writing is not None:
            await asyncio.shield(self.writing)
            self.writing = None

    async def stop(self, task: asyncio.Task) -> None:
        """The stream is over (ended, failed or its caller gone): a pack being written is let finish (its thread
        cannot be stopped, and the sink must not close under it), then the sink closes."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self.writing is not None:
            with contextlib.suppress(BaseException):
                await self.writing
        if self.sink is not None:
            await asyncio.to_thread(self.sink.close)

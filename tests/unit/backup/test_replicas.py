"""The destination's pure rules for replicas (domain/replicas.py) and its chunk sink (transfer/chunks.py) on the
in-memory store and index: checked before stored, indexed only once durable."""
import os
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys, chunk_id
from cbr_backup.datapath.dictionary import VaultDictionaries, dictionaries_prefix
from cbr_backup.datapath.packs import ChunkSource, PackWriter
from cbr_backup.domain import errors
from cbr_backup.domain.replicas import (ManifestParts, SourceBackup, check_limit, check_record_id,
                                        check_replica_room, check_replica_vault, check_source)
from cbr_backup.transfer.chunks import CHECK_FAILED, NO_DICTIONARY, NOT_WANTED, ChunkSink, WireChunk, adopt_packs
from cbr_backup.transfer.namespaces import NamespaceKeys

VAULT = str(uuid.uuid4())


def disk(backup_id=None, **fields):
    return SourceBackup(backup_id=backup_id or str(uuid.uuid4()), project_id="p", vault_id=VAULT,
                        resource_id=str(uuid.uuid4()), resource_type="disk", **fields)


def test_parts_of_a_server_are_its_record_and_its_disks():
    children = (disk(), disk())
    server = SourceBackup(backup_id=str(uuid.uuid4()), project_id="p", vault_id=VAULT, resource_id="s",
                          resource_type="server", children=children)
    assert check_source(server, VAULT).parts() == {server.backup_id: "server", children[0].backup_id: "disk",
                                                   children[1].backup_id: "disk"}
    assert SourceBackup.from_json(server.to_json()) == server
    tree = SourceBackup(backup_id=str(uuid.uuid4()), project_id="p", vault_id=VAULT, resource_id="t",
                        resource_type="turbo")
    assert tree.parts() == {tree.backup_id: "tree"}


@pytest.mark.parametrize("source", [
    disk(backup_id="not-a-uuid"),
    SourceBackup(backup_id=str(uuid.uuid4()), project_id="p", vault_id=VAULT, resource_id="r", resource_type="vm"),
    SourceBackup(backup_id=str(uuid.uuid4()), project_id="p", vault_id=VAULT, resource_id="r",
                 resource_type="server"),  # a server without disks
    disk(children=(disk(),)),  # a disk with children
    SourceBackup(backup_id=str(uuid.uuid4()), project_id="p", vault_id=str(uuid.uuid4()), resource_id="r",
                 resource_type="disk"),  # another vault's
])
def test_malformed_sources_are_refused(source):
    with pytest.raises(errors.InvalidTransferRequestError):
        check_source(source, VAULT)


def test_vault_room_limit_and_record_rules():
    check_replica_vault("replication", "disk", "disk")
    with pytest.raises(errors.ReplicaVaultTypeError):
        check_replica_vault("backup", "disk", "disk")
    with pytest.raises(errors.ReplicaVaultTypeError):
        check_replica_vault("replication", "server", "disk")
    check_replica_room(0, 1, False, 1 << 30)
    with pytest.raises(errors.ReplicaVaultFullError):
        check_replica_room(1, 1, False, 1 << 30)
    check_replica_room(10 << 30, 1, True, 1 << 30)  # auto-expanding
    assert check_limit(16384) == 16384
    for limit in (0, 16385):
        with pytest.raises(errors.InvalidTransferRequestError):
            check_limit(limit)
    with pytest.raises(errors.InvalidTransferRequestError):
        check_record_id("a/b")


def test_manifest_parts_must_follow_each_other():
    parts = ManifestParts("disk", "")
    parts.add("disk", "", 0, b"abc", False, 100)
    with pytest.raises(errors.InvalidManifestError):
        parts.add("disk", "", 2, b"x", False, 100)  # a repeat
    with pytest.raises(errors.InvalidManifestError):
        parts.add("disk", "other", 3, b"x", False, 100)  # another parent
    with pytest.raises(errors.InvalidManifestError):
        parts.add("disk", "", 3, b"x" * 98, False, 100)  # too large
    parts.add("disk", "", 3, b"de", True, 100)
    assert (bytes(parts.data), parts.complete) == (b"abcde", True)
    with pytest.raises(errors.InvalidManifestError):
        parts.add("disk", "", 5, b"", True, 100)  # after the last


def test_sink_checks_packs_and_indexes_in_that_order():
    source_key = os.urandom(32)
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    keys = NamespaceKeys(source_key, os.urandom(32), "ns-1")
    dictionary = b"some words the chunks share " * 4000
    dictionaries = VaultDictionaries(store, VAULT, keys)
    (tag, _), _ = dictionaries.create(dictionary)
    assert next(iter(store.iterate(dictionaries_prefix(VAULT, "ns-1"))))
    sender = ChunkCodec(VaultKeys(source_key), dictionary=(tag, dictionary), dictionaries=lambda t: dictionary)
    blocks = [b"some words the chunks share, and more " * 3000, os.urandom(65536), b"x" * 70000]
    wires = []
    for data in blocks:
        digest = chunk_id(data, source_key)
        form = sender.to_wire(sender.encode(data, digest), digest, len(data))
        wires.append(WireChunk(digest, len(data), form.flags, form.tag, form.payload))
    flipped = WireChunk(wires[1].chunk_id, wires[1].raw_size, wires[1].flags, wires[1].tag,
                        bytes([wires[1].payload[0] ^ 1]) + wires[1].payload[1:])
    unknown_dict = WireChunk(wires[0].chunk_id, wires[0].raw_size, wires[0].flags, wires[0].tag ^ 1,
                             wires[0].payload)
    stranger = WireChunk(os.urandom(32), 10, 0, 0, b"0123456789")
    wanted = {w.chunk_id: w.raw_size for w in wires}
    codec = ChunkCodec(keys, dictionaries=dictionaries.by_tag)
    sink = ChunkSink.open(store, lambda: index, codec, VAULT, dictionaries.by_tag)
    sink.receive(1, [flipped, unknown_dict, stranger, wires[2]], wanted, now=0.0)
    sealed = sink.seal()
    sink.receive(2, wires[:2], wanted, now=1.0)  # the next pack fills while the sealed one waits to be written
    assert index.count(VAULT) == 0  # nothing indexed before the pack is durable
    batch = sink.write(sealed)
    assert batch.through_seq == 1 and batch.indexed == [wires[2].chunk_id] and index.count(VAULT) == 1
    later = sink.write(sink.seal())
    assert later.through_seq == 2 and sorted(later.indexed + batch.indexed) == sorted(wanted)
    assert sorted((r.chunk_id, r.code) for r in batch.rejected) == sorted([
        (flipped.chunk_id, CHECK_FAILED), (unknown_dict.chunk_id, NO_DICTIONARY), (stranger.chunk_id, NOT_WANTED)])
    assert index.count(VAULT) == 3
    values = ChunkSource(store, codec, VAULT, index).fetch_many(wanted)
    assert [codec.decode(values[w.chunk_id], w.chunk_id, w.raw_size) for w in wires] == blocks
    assert sink.write(sink.seal()).indexed == []  # nothing pending: nothing written


def test_adoption_indexes_the_checked_wanted_chunks_of_a_put_pack():
    source_key = os.urandom(32)
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    keys = NamespaceKeys(source_key, None, "ns-2")
    codec = ChunkCodec(keys)
    blocks = [os.urandom(5000) for _ in range(3)]
    ids = [chunk_id(b, source_key) for b in blocks]
    writer = PackWriter(store, codec, VAULT, target_size=1 << 30)
    writer.add_many([(c, len(b), codec.encode(b, c)) for c, b in zip(ids[:2], blocks[:2])])
    writer.add(ids[2], len(blocks[2]), b"x" * len(blocks[2]))  # a value that fails its check
    pack_id = os.urandom(16)
    writer.close(pack_id)
    wanted = {c: len(b) for c, b in zip(ids, blocks)}
    adopted = adopt_packs(store, index, codec, VAULT, [pack_id, os.urandom(16)], wanted)  # the second: never put
    assert sorted(adopted) == sorted(ids[:2]) and index.count(VAULT) == 2
    assert {chunk: where[0] for chunk, where in index.locations(VAULT, ids).items()} == {c: pack_id for c in ids[:2]}

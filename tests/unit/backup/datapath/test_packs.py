"""The pack file format (DESIGN.md 13.1): self-describing, sealed trailer, checked on read."""
import os
import struct
import threading
import time

import pytest

from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import ChunkCorruptError, VaultKeys, chunk_id
from cbr_backup.datapath.chunk_codec import ChunkCodec
from cbr_backup.datapath.packs import (FOOTER_SIZE, PackBuffer, PackEntry, PackWriter, encode_pack, pack_size, read_pack_entries,
                                       pack_target_size)

KEY = "v/packs/" + "ab" * 16


def _pack(codec, values: list[bytes]) -> tuple[bytes, list[PackEntry]]:
    entries, offset = [], 0
    for value in values:
        entries.append(PackEntry(os.urandom(32), len(value) + 1, offset, len(value)))
        offset += len(value)
    return encode_pack(codec, KEY, b"".join(values), entries), entries


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_pack_lists_its_chunks_without_a_database(encrypted):
    codec = ChunkCodec(VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None))
    store = MemoryChunkStore()
    value, entries = _pack(codec, [b"a" * 100, b"b" * 7, b"c" * 3000])
    store.put(KEY, value)
    assert read_pack_entries(store, codec, KEY) == entries
    assert pack_size(store, KEY) == len(value)
    trailer_plain = struct.pack("<8sHHI", b"CBRPTR\r\n", 1, 0, 3)
    assert (trailer_plain in value) is not encrypted  # an encrypted vault's trailer says nothing in the clear


def test_a_pack_of_another_vault_or_key_does_not_read():
    codec = ChunkCodec(VaultKeys(os.urandom(32), os.urandom(32)))
    store = MemoryChunkStore()
    value, _ = _pack(codec, [b"x" * 50])
    store.put(KEY, value)
    store.put("v/packs/" + "cd" * 16, value)  # the same bytes under another pack's key
    with pytest.raises(ChunkCorruptError):
        read_pack_entries(store, ChunkCodec(VaultKeys(os.urandom(32), os.urandom(32))), KEY)
    with pytest.raises(ChunkCorruptError):  # the trailer is bound to its pack's key
        read_pack_entries(store, codec, "v/packs/" + "cd" * 16)


@pytest.mark.parametrize("damage", ["magic", "version", "short", "overlap", "past-the-data", "twice"])
def test_a_damaged_pack_is_refused(damage):
    codec = ChunkCodec(VaultKeys(os.urandom(32)))
    values = [b"a" * 100, b"b" * 100]
    value, entries = _pack(codec, values)
    if damage == "magic":
        value = value[:-1] + b"X"
    elif damage == "version":
        value = value[:-12] + struct.pack("<H", 2) + value[-10:]
    elif damage == "short":
        value = value[-FOOTER_SIZE + 1:]
    else:
        first, second = entries
        second = {"overlap": PackEntry(second.chunk, 1, 50, 100), "past-the-data": PackEntry(second.chunk, 1, 100, 101),
                  "twice": PackEntry(first.chunk, 1, 100, 100)}[damage]
        value = encode_pack(codec, KEY, b"".join(values), [first, second])
    store = MemoryChunkStore()
    store.put(KEY, value)
    with pytest.raises(ChunkCorruptError):
        read_pack_entries(store, codec, KEY)


def test_packs_close_at_the_target_size(monkeypatch):
    keys = VaultKeys(os.urandom(32))
    codec, store = ChunkCodec(keys), MemoryChunkStore()
    writer = PackWriter(store, codec, "v", target_size=1000)
    blocks = [os.urandom(400) for _ in range(7)]
    for block in blocks:
        writer.add(chunk_id(block, keys.id_key), len(block), block)
    assert writer.packs_written == 2  # 1200 bytes each; the 7th waits in the open pack
    assert len(writer.take_rows()) == 6 and writer.take_rows() == []
    writer.close()
    assert writer.packs_written == 3 and len(writer.take_rows(at_least=2)) == 0 and len(writer.take_rows()) == 1
    monkeypatch.setenv("CBR_PACK_TARGET_MIB", "8")
    assert pack_target_size() == 8 << 20
    monkeypatch.setenv("CBR_PACK_TARGET_MIB", "0")
    with pytest.raises(ValueError):
        pack_target_size()


def test_a_pack_takes_over_the_mapping_of_the_last_one_put_and_holds_only_its_own_bytes():
    old = PackBuffer(1 << 20)
    old.append(b"x" * 5000)
    new = PackBuffer(1 << 20, spare=old)
    assert new.mapped and not old.mapped and len(new) == 0
    new.append(b"y" * 10)
    assert bytes(new.content()) == b"y" * 10
    assert PackBuffer(2 << 20, spare=new).mapped and new.mapped  # another size: a mapping of its own

    keys = VaultKeys(os.urandom(32))  # through the writer: packs of different lengths, one mapping reused
    codec, store = ChunkCodec(keys), MemoryChunkStore()
    writer = PackWriter(store, codec, "v", target_size=1000)
    blocks = [os.urandom(n) for n in (900, 300, 200, 900, 100)]  # 3 packs
    for block in blocks:
        writer.add(chunk_id(block, keys.id_key), len(block), block)
    writer.close()
    rows = writer.take_rows()
    assert writer.packs_written == 3 and len(rows) == 5
    for (chunk, raw, stored, pack_id, offset), block in zip(rows, blocks):
        key = "v/packs/" + pack_id.hex()
        entries = read_pack_entries(store, codec, key)
        assert [e.chunk for e in entries if e.offset == offset] == [chunk]
        assert store.get(key)[offset:offset + stored] == block


class _GatedStore(MemoryChunkStore):
    """A store whose puts wait for a gate, counting how many run at once."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.running = self.most = self.started = 0
        self._count = threading.Lock()

    def put(self, key, data):
        with self._count:
            self.running += 1
            self.started += 1
            self.most = max(self.most, self.running)
        self.gate.wait(10)
        with self._count:
            self.running -= 1
        return super().put(key, data)


def test_a_full_pack_waits_while_another_is_put():
    """At most max_puts packs are put at once; while that many are, a full open pack waits and so does whoever
    adds to it, so the writer holds max_puts + 1 packs at most (the worker's memory, DESIGN.md 13.2)."""
    keys = VaultKeys(os.urandom(32))
    store = _GatedStore()
    writer = PackWriter(store, ChunkCodec(keys), "v", target_size=1000, max_puts=1)
    blocks = [os.urandom(600) for _ in range(5)]
    items = [(chunk_id(block, keys.id_key), len(block), block) for block in blocks]
    first = threading.Thread(target=writer.add_many, args=(items[:2],))
    first.start()
    while store.started < 1:
        time.sleep(0.01)
    writer.add_many(items[2:4])  # fills the next pack, which stays open: the one put slot is taken
    third = threading.Thread(target=writer.add_many, args=(items[4:],))
    third.start()
    third.join(0.3)
    assert third.is_alive() and store.started == 1  # no room in the full open pack, no slot to put it
    store.gate.set()
    first.join(10)
    third.join(10)
    assert not first.is_alive() and not third.is_alive()
    writer.close()
    assert store.started == 3 and store.most == 1 and writer.packs_written == 3
    assert sorted(row[0] for row in writer.take_rows()) == sorted(item[0] for item in items)

"""Test helpers for chunks inside pack files: find them, damage one, take one away (DESIGN.md section 13)."""
from __future__ import annotations

from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.packs import FOOTER_SIZE, PackEntry, encode_pack, pack_prefix, read_pack_entries


def packed_chunks(store, keys: VaultKeys, vault_id: str) -> dict[bytes, tuple[str, PackEntry]]:
    """Every chunk the vault's packs list, with its pack's key (read from the trailers, as without a database)."""
    codec = ChunkCodec(keys)
    found = {}
    for key in store.iterate(pack_prefix(vault_id)):
        for entry in read_pack_entries(store, codec, key):
            found[entry.chunk] = (key, entry)
    return found


def stored_value(store, keys: VaultKeys, vault_id: str, chunk: bytes) -> bytes:
    key, entry = packed_chunks(store, keys, vault_id)[chunk]
    return store.read_ranges(key, [(entry.offset, entry.length)])[0]


def _rewrite(store, keys: VaultKeys, vault_id: str, chunk: bytes, flip: bool) -> None:
    key, target = packed_chunks(store, keys, vault_id)[chunk]
    codec = ChunkCodec(keys)
    entries = read_pack_entries(store, codec, key)
    value = store.get(key)
    data = bytearray(value[:max(e.offset + e.length for e in entries)])
    if flip:
        data[target.offset + target.length // 2] ^= 0x40
    else:
        entries = [e for e in entries if e.chunk != chunk]
    store.delete(key)
    assert store.put(key, encode_pack(codec, key, data, entries))


def corrupt_chunk(store, keys: VaultKeys, vault_id: str, chunk: bytes) -> None:
    """Flips one bit in the middle of the chunk's stored value, in its pack."""
    _rewrite(store, keys, vault_id, chunk, flip=True)


def drop_chunk(store, keys: VaultKeys, vault_id: str, chunk: bytes, index=None) -> None:
    """Takes the chunk out of its pack's trailer (and its row out of a MemoryChunkIndex): it is missing."""
    _rewrite(store, keys, vault_id, chunk, flip=False)
    if index is not None:
        index.rows.pop((vault_id, chunk), None)


def to_lone_chunks(store, keys: VaultKeys, vault_id: str, index) -> int:
    """Turns a packed vault into the layout from before packs: every chunk its own object under
    `<vault>/chunks/`, index rows without a pack, no packs. Returns the number of chunks moved."""
    moved = packed_chunks(store, keys, vault_id)
    for chunk, (key, entry) in moved.items():
        store.put(f"{vault_id}/chunks/{chunk.hex()}", store.read_ranges(key, [(entry.offset, entry.length)])[0])
    store.flush()
    if hasattr(index, "rows"):  # MemoryChunkIndex
        for (vault, _), row in index.rows.items():
            if vault == vault_id:
                row[4] = row[5] = None
    else:  # ChunkIndex: the rows as migration backup_0005 left them
        with index._lock:
            index._conn.execute("UPDATE backup.chunks SET pack_id = NULL, pack_offset = NULL WHERE vault_id = %s",
                                (vault_id,))
    for key in {key for key, _ in moved.values()}:
        store.delete(key)
    return len(moved)


def chunk_objects(store, vault_id: str) -> set[str]:
    """The store keys holding the vault's chunks: packs, and lone chunk objects from before packs."""
    return set(store.iterate(f"{vault_id}/packs/")) | set(store.iterate(f"{vault_id}/chunks/"))


def flip_pack_byte(path, offset: int) -> None:
    """Flips one byte of a pack file's chunk data (offset < 0: from the data's end), without any key: the
    footer, which is never encrypted, says where the data ends (DESIGN.md 13.1)."""
    import os
    import struct
    with open(path, "r+b") as f:
        f.seek(-FOOTER_SIZE, os.SEEK_END)
        data_end = struct.unpack_from("<Q", f.read(FOOTER_SIZE))[0]
        where = data_end + offset if offset < 0 else offset
        assert 0 <= where < data_end
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0xFF]))

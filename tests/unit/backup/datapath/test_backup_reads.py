"""Reads out of a backup on a memory store and index: any range of a disk image or a file comes back exact (holes
as zeros or as holes), every chunk is checked (a damaged or missing one raises, never yields wrong bytes), and a
selective restore writes only what was picked."""
import os
import random
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import ChunkCorruptError, ChunkMissingError, VaultKeys, backup_disk
from cbr_backup.datapath import backup_reads
from cbr_backup.datapath.backup_reads import Piece, TreeView, file_range, image_range
from cbr_backup.datapath.chunk_codec import ChunkCodec
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.tree_backup import backup_tree
from cbr_backup.datapath.tree_manifest import EntryKind
from cbr_backup.datapath.tree_restore import restore_tree
from tests.support.packs import corrupt_chunk, drop_chunk
from tests.unit.backup.datapath.disk_images import make_disk

MIB = 1 << 20


class Vault:
    def __init__(self):
        self.id = str(uuid.uuid4())
        self.keys = VaultKeys(os.urandom(32), os.urandom(32))
        self.store = MemoryChunkStore()
        self.index = MemoryChunkIndex()

    def source(self) -> ChunkSource:
        codec = ChunkCodec(self.keys, dictionaries=VaultDictionaries(self.store, self.id, self.keys).by_tag)
        return ChunkSource(self.store, codec, self.id, self.index)


def joined(pieces) -> tuple[bytes, list[Piece]]:
    pieces = list(pieces)
    out = bytearray()
    for piece in pieces:
        assert piece.offset == (pieces[0].offset + len(out))  # in order, no gaps, no overlap
        assert len(piece.data) <= backup_reads.PIECE_BYTES and not (piece.data and piece.hole)
        out += piece.data or bytes(piece.hole)
    return bytes(out), pieces


@pytest.fixture
def disk_backup(tmp_path):
    vault = Vault()
    path = tmp_path / "disk.img"
    make_disk(path, 6 * MIB + 12_288, seed=3)  # a short last block, holes, text and random extents
    # 128 KiB blocks: make_disk's 256 KiB hole extents are then whole zero blocks
    result = backup_disk(path, vault.keys, vault.store, vault.index, vault.id, block_size=128 << 10)
    return vault, result.manifest, path.read_bytes()


def test_image_ranges_are_exact_with_holes_as_zeros_or_holes(disk_backup):
    vault, manifest, image = disk_backup
    rng = random.Random(1)
    spans = [(0, len(image)), (len(image) - 1, 1), (131_071, 2), (5, 3 * MIB + 77)]
    spans += [(o, rng.randrange(1, len(image) - o)) for o in (rng.randrange(len(image)) for _ in range(20))]
    for offset, length in spans:
        for holes in (False, True):
            got, pieces = joined(image_range(manifest, vault.source(), offset, length, holes))
            assert got == image[offset:offset + length], (offset, length, holes)
            if not holes:
                assert not any(p.hole for p in pieces)  # zeros sent as data
    _, pieces = joined(image_range(manifest, vault.source(), 0, len(image), holes=True))
    assert sum(p.hole for p in pieces) >= MIB  # make_disk leaves 35% holes
    assert list(image_range(manifest, vault.source(), 10, 0)) == []


def test_a_damaged_or_missing_chunk_raises_before_its_bytes_are_handed_out(disk_backup):
    vault, manifest, image = disk_backup
    victims = [chunk for _, chunk in manifest.data_blocks()]
    corrupt_chunk(vault.store, vault.keys, vault.id, victims[-1])
    handed = []
    with pytest.raises(ChunkCorruptError):
        for piece in image_range(manifest, vault.source(), 0, len(image)):
            handed.append(piece)
    for piece in handed:
        assert piece.data == image[piece.offset:piece.offset + len(piece.data)]

    drop_chunk(vault.store, vault.keys, vault.id, victims[0], vault.index)
    with pytest.raises(ChunkMissingError):
        list(image_range(manifest, vault.source(), 0, len(image)))


@pytest.fixture
def tree_backup(tmp_path):
    vault = Vault()
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    big = random.Random(2).randbytes(5 * MIB + 3)
    (root / "a" / "b" / "big.bin").write_bytes(big)
    (root / "a" / "note.txt").write_text("note\n")
    with open(root / "sparse", "wb") as f:
        f.truncate(3 * MIB)
        f.seek(2 * MIB)
        f.write(b"data")
    os.link(root / "a" / "note.txt", root / "twin")
    os.symlink("a/note.txt", root / "link")
    manifest = backup_tree(root, vault.keys, vault.store, vault.index, vault.id).manifest
    return vault, TreeView(manifest), root


def test_tree_view_lists_and_reads_files(tree_backup):
    vault, view, root = tree_backup
    assert [e.path for e in view.listing(b"")] == [b"a", b"link", b"sparse", b"twin"]
    assert [e.path for e in view.listing(b"a")] == [b"a/b", b"a/note.txt"]
    assert [e.path for e in view.listing(b"a/note.txt")] == [b"a/note.txt"]  # a file lists as itself
    assert view.listing(b"nope") is None
    twin = view.entry(b"twin")
    assert twin.kind == EntryKind.HARDLINK and view.file_of(twin).path == b"a/note.txt"

    big = (root / "a/b/big.bin").read_bytes()
    entry = view.entry(b"a/b/big.bin")
    for offset, length in ((0, len(big)), (MIB - 1, 2 * MIB + 5), (len(big) - 1, 1)):
        assert joined(file_range(entry, vault.source(), offset, length))[0] == big[offset:offset + length]
    sparse = (root / "sparse").read_bytes()
    got, pieces = joined(file_range(view.entry(b"sparse"), vault.source(), 0, len(sparse), holes=True))
    assert got == sparse and pieces[0].hole == 2 * MIB
    assert joined(file_range(view.entry(b"sparse"), vault.source(), 0, len(sparse)))[0] == sparse


def test_select_takes_the_paths_their_parents_and_makes_orphaned_hard_links_copies(tree_backup, tmp_path):
    vault, view, root = tree_backup
    picked = view.select([b"a/b", b"twin"])
    assert [e.path for e in picked.entries] == [b"", b"a", b"a/b", b"a/b/big.bin", b"twin"]
    twin = picked.entries[-1]
    assert twin.kind == EntryKind.FILE and twin.segments == view.entry(b"a/note.txt").segments
    target = tmp_path / "target"
    restore_tree(picked, vault.store, vault.keys, vault.id, target, index=vault.index)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["a", "a/b", "a/b/big.bin", "twin"]
    assert (target / "twin").read_text() == "note\n"

    both = view.select([b"a/note.txt", b"twin"])
    assert both.entries[-1].kind == EntryKind.HARDLINK  # its file comes too: it stays a link

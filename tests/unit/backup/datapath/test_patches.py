"""Patched blocks (DESIGN.md 3.1): an incremental backup stores a block whose few 4 KiB pages changed as those
pages against its parent's block; every read path puts the block back byte for byte and checks it."""
import os
import random

import pytest

from cbr_backup.datapath import ChunkCorruptError, load_manifest
from cbr_backup.datapath.backup_reads import image_range
from cbr_backup.datapath.chunk_codec import ChunkCodec
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.datapath.manifest import DiskManifest, Patch, patch_length
from cbr_backup.datapath.manifest_delta import apply_delta, encode_delta
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.patches import diff_pages
from cbr_backup.datapath.verify import verify_patched_blocks
from tests.unit.backup.datapath.disk_images import MIB, make_disk, sha256_file
from tests.unit.backup.datapath.test_disk_paths import BS, Vault

PAGE = 4096


def _id(n: int) -> bytes:
    return bytes([n]) * 32


def _manifest(patches: dict[int, Patch], blocks: int = 6, zero: bytes | None = None) -> DiskManifest:
    zero = zero if zero is not None else b"\x00\x00\x01\x00\x00\x00"[:blocks]
    ids = b"".join(bytes(32) if z else _id(10 + i) for i, z in enumerate(zero))
    return DiskManifest(blocks * BS - 1000, BS, ids, zero, patches)


def _pages(*numbers: int) -> bytes:
    out = bytearray(BS // PAGE // 8)
    for p in numbers:
        out[p >> 3] |= 1 << (p & 7)
    return bytes(out)


# The manifest

def test_patched_blocks_round_trip_in_one_maximal_run():
    patches = {3: Patch(_id(1), _id(2), _pages(0)), 4: Patch(_id(1), _id(3), _pages(5, 15)),
               5: Patch(_id(4), _id(5), _pages(15))}
    manifest = _manifest(patches)
    encoded = manifest.encode()
    assert encoded[8:10] == b"\x02\x00"  # version 2 only with patches
    assert DiskManifest.decode(encoded) == manifest
    assert [kind for kind, _, _ in manifest.runs()] == [1, 0, 2]
    assert _manifest({}).encode()[8:10] == b"\x01\x00"


def test_chunk_sizes_name_bases_and_patches_not_patched_blocks():
    length = 6 * BS - 1000 - 5 * BS  # the short last block
    manifest = _manifest({1: Patch(_id(1), _id(2), _pages(0, 1)), 5: Patch(_id(3), _id(4), _pages(15))})
    sizes = manifest.chunk_sizes()
    assert sizes == {_id(10): BS, _id(1): BS, _id(2): 2 * PAGE, _id(13): BS, _id(14): BS, _id(3): length,
                     _id(4): length - 15 * PAGE}
    assert manifest.unique_ids() == set(sizes)
    assert manifest.block_id(1) == _id(11) and manifest.patch_of(1).base == _id(1)


@pytest.mark.parametrize("patch", [Patch(_id(1), _id(2), bytes(2)), Patch(_id(1), _id(2), b"\x01")],
                         ids=["no page", "short map"])
def test_a_patch_naming_no_page_is_refused(patch):
    with pytest.raises(ValueError):
        _manifest({0: patch})


def test_decode_refuses_a_version_2_manifest_without_patches_and_a_truncated_patched_run():
    plain = bytearray(_manifest({}).encode()[:-32])
    plain[8:10] = b"\x02\x00"
    import blake3
    with pytest.raises(ManifestCorruptError, match="without patched"):
        DiskManifest.decode(bytes(plain) + blake3.blake3(plain).digest())
    body = _manifest({0: Patch(_id(1), _id(2), _pages(1))}).encode()[:-32 - 200]
    with pytest.raises(ManifestCorruptError):
        DiskManifest.decode(body + blake3.blake3(body).digest())


def test_delta_carries_patches_same_and_new():
    old = _manifest({0: Patch(_id(1), _id(2), _pages(3)), 4: Patch(_id(5), _id(6), _pages(1))})
    new = _manifest({0: Patch(_id(1), _id(2), _pages(3)), 1: Patch(_id(7), _id(8), _pages(2)),
                     4: Patch(_id(5), _id(9), _pages(1, 2))})
    delta = encode_delta(new.encode(), old.encode())
    assert apply_delta(delta, old.encode()) == new.encode()
    unpatched = _manifest({})  # the same ids, no patches: the patches must not survive as SAME
    assert apply_delta(encode_delta(unpatched.encode(), new.encode()), new.encode()) == unpatched.encode()


def test_diff_known_pages_compares_only_the_pages_it_is_given():
    from cbr_backup.datapath.patches import diff_known_pages
    base = bytes(range(256)) * (BS // 256)
    block = bytearray(base)
    block[5 * PAGE + 7] ^= 1
    block[9 * PAGE] ^= 1  # not among the pages given: the caller vouches that it did not change
    given = {p: base[p * PAGE:(p + 1) * PAGE] for p in (2, 5)}
    assert diff_known_pages(memoryview(block), given, BS) == _pages(5)
    assert diff_known_pages(memoryview(base), given, BS) is None
    everything = {p: base[p * PAGE:(p + 1) * PAGE] for p in range(BS // PAGE)}
    assert diff_known_pages(memoryview(os.urandom(BS)), everything, BS) is None  # past the share


def test_diff_pages_finds_changed_pages_and_gives_up_past_the_share():
    base = bytes(range(256)) * (BS // 256)
    block = bytearray(base)
    block[5 * PAGE + 7] ^= 1
    block[BS - 1] ^= 1
    assert diff_pages(memoryview(block), base, BS) == _pages(5, 15)
    assert diff_pages(memoryview(base), base, BS) is None
    assert diff_pages(memoryview(os.urandom(BS)), base, BS) is None


# Through the data path

def _poke(path, offsets, seed=3):
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(rng.randbytes(100))


def _write(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _text_disk(tmp_path):
    return make_disk(tmp_path / "disk", 4 * MIB, extent=BS, holes=0.0, text=0.5)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_incremental_stores_changed_pages_and_every_path_restores_them(tmp_path, encrypted):
    disk = _text_disk(tmp_path)
    vault = Vault(encrypted)
    full = vault.backup(disk)
    _poke(disk, [3 * BS + 5, 3 * BS + 9 * PAGE, 20 * BS + 100, 40 * BS + BS - 150])
    incremental = vault.backup(disk, parent=full.manifest)
    manifest = load_manifest(vault.store, vault.keys, vault.id, incremental.manifest_id)
    assert manifest == incremental.manifest
    assert sorted(manifest.patches) == [3, 20, 40] and incremental.patched_blocks == 3
    assert manifest.patch_of(3).pages == _pages(0, 9) and manifest.patch_of(3).base == full.manifest.block_id(3)
    assert incremental.new_chunks == 3  # three patches, no whole block
    assert incremental.stored_bytes_added < incremental.manifest_bytes + 3 * (2 * PAGE + 100) + 3 * 4096

    vault.restore(manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)
    with open(tmp_path / "old", "wb") as f:  # in place, over the full backup's content
        vault.restore(full.manifest, f.name)
    vault.restore(manifest, tmp_path / "old", in_place=True)
    assert sha256_file(tmp_path / "old") == sha256_file(disk)
    codec = ChunkCodec(vault.keys, dictionaries=VaultDictionaries(vault.store, vault.id, vault.keys).by_tag)
    source = ChunkSource(vault.store, codec, vault.id, vault.index)
    got = b"".join(p.data for p in image_range(manifest, source, 3 * BS - 10, BS + 20))
    with open(disk, "rb") as f:
        f.seek(3 * BS - 10)
        assert got == f.read(BS + 20)


def test_patches_stay_one_level_deep_and_unchanged_patches_are_kept(tmp_path):
    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _poke(disk, [3 * BS + 5])
    first = vault.backup(disk, parent=full.manifest)
    same = vault.backup(disk, parent=first.manifest)
    assert same.new_chunks == 0 and same.manifest.patches == first.manifest.patches
    _poke(disk, [3 * BS + 2 * PAGE], seed=4)
    second = vault.backup(disk, parent=same.manifest)
    patch = second.manifest.patch_of(3)
    assert patch.base == full.manifest.block_id(3)  # against the whole block, never a patch of a patch
    assert patch.pages == _pages(0, 2)
    vault.restore(second.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


def test_a_block_mostly_rewritten_is_stored_whole(tmp_path):
    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _write(disk, 5 * BS, os.urandom(BS - PAGE))
    incremental = vault.backup(disk, parent=full.manifest)
    assert 5 not in incremental.manifest.patches and incremental.new_chunks == 1


def test_a_patch_that_does_not_make_its_block_fails_the_restore(tmp_path):
    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _poke(disk, [7 * BS + 5])
    incremental = vault.backup(disk, parent=full.manifest)
    patch = incremental.manifest.patch_of(7)
    wrong = incremental.manifest.patches | {7: patch._replace(base=full.manifest.block_id(8))}
    bad = DiskManifest(incremental.manifest.disk_size, BS, incremental.manifest.ids, incremental.manifest.zero,
                       wrong)
    with pytest.raises(ChunkCorruptError):
        vault.restore(bad, tmp_path / "new")
    assert patch_length(patch.pages, BS) == PAGE


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_verify_puts_patched_blocks_together_and_names_the_ones_that_do_not_come_out_whole(tmp_path, encrypted):
    disk = _text_disk(tmp_path)
    vault = Vault(encrypted)
    full = vault.backup(disk)
    _poke(disk, [3 * BS + 5, 7 * BS + 5, 9 * BS + 2 * PAGE])
    manifest = vault.backup(disk, parent=full.manifest).manifest
    assert sorted(manifest.patches) == [3, 7, 9]
    sound = manifest.patched_blocks()
    assert sorted(sound.values()) == [BS] * 3 and {key[1] for key in sound} == set(manifest.patches.values())
    assert verify_patched_blocks(vault.index, vault.store, vault.keys, vault.id, sound, batch=2) == {}

    # each chunk sound, but not the block: a base that is another block, a page map naming the wrong page
    seven, nine = manifest.patch_of(7), manifest.patch_of(9)
    wrong_base = (manifest.block_id(7), seven._replace(base=full.manifest.block_id(8)))
    wrong_page = (manifest.block_id(9), nine._replace(pages=_pages(3)))
    missing = (manifest.block_id(3), manifest.patch_of(3)._replace(chunk=_id(99)))
    found = verify_patched_blocks(vault.index, vault.store, vault.keys, vault.id,
                                  {**sound, wrong_base: BS, wrong_page: BS, missing: BS}, batch=2)
    assert found == {wrong_base: "corrupt: its base and patch do not make the block",
                     wrong_page: "corrupt: its base and patch do not make the block",
                     missing: f"patch {_id(99).hex()} missing"}


def test_a_range_the_provider_reports_unchanged_keeps_its_patch_unread(tmp_path):
    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _poke(disk, [3 * BS + 5])
    first = vault.backup(disk, parent=full.manifest, changed=[(3 * BS, 4 * BS)])
    assert sorted(first.manifest.patches) == [3]
    _poke(disk, [9 * BS + 5], seed=5)
    second = vault.backup(disk, parent=first.manifest, changed=[(9 * BS, 10 * BS)])
    assert second.read_bytes == BS  # block 3 was not read: its patched entry came from the parent
    assert second.manifest.patch_of(3) == first.manifest.patch_of(3) and sorted(second.manifest.patches) == [3, 9]
    vault.restore(second.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


def test_gc_keeps_a_base_whose_own_backup_is_gone(tmp_path):
    import datetime as dt

    from cbr_backup.datapath.gc import collect_garbage

    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _write(disk, 2 * BS, os.urandom(BS))  # block 2 rewritten whole, block 6 in one page
    _poke(disk, [6 * BS + 5])
    incremental = vault.backup(disk, parent=full.manifest)
    base = incremental.manifest.patch_of(6).base
    assert base == full.manifest.block_id(6) and base not in {chunk for _, chunk in incremental.manifest.data_blocks()}
    result = collect_garbage(vault.index, vault.store, vault.id, lambda: iter(incremental.manifest.unique_ids()),
                             live_manifest_ids={incremental.manifest_id}, grace=dt.timedelta(0),
                             oldest_running_start=None, repack_fraction=1.0)
    assert result.deleted_chunks == 1  # the full backup's block 2, which nothing references any more
    vault.restore(incremental.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


def test_a_page_map_naming_a_page_past_the_block_is_refused():
    # the last block is BS / 2 - 1000 bytes: pages 0-7, the last one short; page 8 does not exist
    with pytest.raises(ValueError):
        DiskManifest(6 * BS - 1000 - BS // 2, BS, b"".join(_id(10 + i) for i in range(6)), bytes(6),
                     {5: Patch(_id(1), _id(2), _pages(8))})
    DiskManifest(6 * BS - 1000 - BS // 2, BS, b"".join(_id(10 + i) for i in range(6)), bytes(6),
                 {5: Patch(_id(1), _id(2), _pages(7))})


def test_a_first_backup_stores_a_repeated_block_once_across_its_commit_batches(tmp_path):
    half = make_disk(tmp_path / "half", 2 * MIB, extent=BS, holes=0.0)
    with open(half, "rb") as f:
        data = f.read()
    with open(tmp_path / "disk", "wb") as f:
        f.write(data + data)
    vault = Vault()
    result = vault.backup(tmp_path / "disk", commit_every=4, pack_target=BS)  # batches indexed as it goes
    assert result.new_chunks == len(result.manifest.unique_ids()) == 2 * MIB // BS


def test_a_patch_the_vault_has_is_not_stored_again(tmp_path):
    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _write(disk, 3 * BS, bytes(PAGE))  # one zeroed page: its patch is 4 KiB of zeros
    first = vault.backup(disk, parent=full.manifest)
    assert first.new_chunks == 1
    _write(disk, 9 * BS, bytes(PAGE))  # the same patch in another block
    second = vault.backup(disk, parent=first.manifest)
    assert second.manifest.patch_of(9).chunk == first.manifest.patch_of(3).chunk and second.new_chunks == 0
    vault.restore(second.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


# Reads of a block's changed pages alone (DESIGN.md 3.2)

@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_changed_page_is_read_alone_and_its_block_put_together_from_the_parent(tmp_path, encrypted):
    disk = _text_disk(tmp_path)
    vault = Vault(encrypted)
    full = vault.backup(disk)
    _poke(disk, [3 * BS + 5, 5 * BS + 2 * PAGE + 10])
    first = vault.backup(disk, parent=full.manifest, changed=[(3 * BS, 3 * BS + 200),
                                                              (5 * BS + 2 * PAGE, 5 * BS + 3 * PAGE)])
    assert first.read_bytes == 2 * PAGE  # the two changed pages, not their blocks
    assert sorted(first.manifest.patches) == [3, 5] and first.manifest.patch_of(3).pages == _pages(0)
    vault.restore(first.manifest, tmp_path / "first")
    assert sha256_file(tmp_path / "first") == sha256_file(disk)

    # The parent's block 3 is itself patched: its content is its base with the parent's patch laid over.
    _poke(disk, [3 * BS + 4 * PAGE], seed=4)
    second = vault.backup(disk, parent=first.manifest, changed=[(3 * BS + 4 * PAGE, 3 * BS + 4 * PAGE + 100)])
    assert second.read_bytes == PAGE
    patch = second.manifest.patch_of(3)
    assert patch.base == full.manifest.block_id(3) and patch.pages == _pages(0, 4)
    vault.restore(second.manifest, tmp_path / "second")
    assert sha256_file(tmp_path / "second") == sha256_file(disk)


def test_a_block_mostly_changed_or_without_a_readable_parent_is_read_whole(tmp_path):
    from tests.support.packs import corrupt_chunk

    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _write(disk, 2 * BS, os.urandom(BS // 2 + PAGE))  # more than half of block 2
    _poke(disk, [6 * BS + 5])
    corrupt_chunk(vault.store, vault.keys, vault.id, full.manifest.block_id(6))  # block 6's parent content
    incremental = vault.backup(disk, parent=full.manifest, changed=[(2 * BS, 2 * BS + BS // 2 + PAGE),
                                                                   (6 * BS, 6 * BS + 100)])
    assert incremental.read_bytes == 2 * BS
    assert 6 not in incremental.manifest.patches  # its base is unreadable: stored whole
    vault.restore(incremental.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


def test_the_reflink_path_reads_only_the_pages_the_snapshots_no_longer_share(tmp_path, monkeypatch):
    """ext4 has no shared extents, so FIEMAP's answer (the changed byte ranges) is stubbed."""
    import cbr_backup.datapath.disk_backup as disk_backup

    disk = _text_disk(tmp_path)
    vault = Vault()
    full = vault.backup(disk)
    _poke(disk, [4 * BS + 3 * PAGE + 7])
    monkeypatch.setattr(disk_backup, "changed_since", lambda *a: [(4 * BS + 3 * PAGE, 4 * BS + 4 * PAGE)])
    (tmp_path / "previous").write_bytes(b"")  # stands for the parent's kept snapshot
    incremental = vault.backup(disk, parent=full.manifest, previous_snapshot=tmp_path / "previous")
    assert incremental.read_bytes == PAGE and sorted(incremental.manifest.patches) == [4]
    vault.restore(incremental.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)


def test_a_page_written_into_a_hole_is_read_alone(tmp_path):
    disk = make_disk(tmp_path / "disk", 4 * MIB, extent=BS, holes=0.5, text=0.5)
    vault = Vault()
    full = vault.backup(disk)
    hole = next(i for i in range(full.manifest.block_count) if full.manifest.zero[i])
    _poke(disk, [hole * BS + PAGE + 9])
    incremental = vault.backup(disk, parent=full.manifest, changed=[(hole * BS + PAGE, hole * BS + 2 * PAGE)])
    assert incremental.read_bytes == PAGE and incremental.new_chunks == 1
    vault.restore(incremental.manifest, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)

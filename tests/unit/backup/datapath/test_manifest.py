"""Disk manifest: encode/decode round trips and every kind of damage detected."""
import os
import struct

import pytest

from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.datapath.manifest import ID_SIZE, MAGIC, DiskManifest, empty_manifest

BS = 64 << 10


def make(disk_size: int, zero_pattern: str, block_size: int = BS) -> DiskManifest:
    """zero_pattern: one character per block, "0" for a zero block, anything else for data."""
    ids = b"".join(bytes(ID_SIZE) if c == "0" else os.urandom(ID_SIZE) for c in zero_pattern)
    zero = bytes(1 if c == "0" else 0 for c in zero_pattern)
    return DiskManifest(disk_size, block_size, ids, zero)


@pytest.mark.parametrize("disk_size,pattern", [
    (0, ""),
    (BS, "1"),
    (BS, "0"),
    (5 * BS + 123, "110101"),   # size not a multiple of the block size: short last block
    (8 * BS, "00000000"),       # only holes
    (8 * BS, "11111111"),
    (8 * BS, "01100110"),
])
def test_round_trip(disk_size, pattern):
    manifest = make(disk_size, pattern)
    decoded = DiskManifest.decode(manifest.encode())
    assert decoded == manifest
    assert [i for i, _ in decoded.data_blocks()] == [i for i, c in enumerate(pattern) if c != "0"]


def test_zero_runs_are_compact():
    manifest = empty_manifest(16 << 30, BS)  # a 16 GiB empty disk: 256 Ki blocks in one run
    encoded = manifest.encode()
    assert len(encoded) < 100
    assert DiskManifest.decode(encoded).block_count == 1 << 18


def test_accessors():
    manifest = make(2 * BS + 10, "101")
    assert manifest.block_length(2) == 10
    assert manifest.block_id(1) is None and len(manifest.block_id(0)) == ID_SIZE
    assert manifest.data_block_count == 2
    assert manifest.unique_ids() == {manifest.block_id(0), manifest.block_id(2)}


def test_every_flipped_byte_is_detected():
    encoded = bytearray(make(6 * BS, "110011").encode())
    for position in range(len(encoded)):
        damaged = bytearray(encoded)
        damaged[position] ^= 0x40
        with pytest.raises(ManifestCorruptError):
            DiskManifest.decode(bytes(damaged))


@pytest.mark.parametrize("cut", [1, 31, 32, 100])
def test_truncation_is_detected(cut):
    encoded = make(6 * BS, "110011").encode()
    with pytest.raises(ManifestCorruptError):
        DiskManifest.decode(encoded[:-cut])


def _resealed(body: bytes) -> bytes:
    import blake3
    return body + blake3.blake3(body).digest()


def test_structural_errors_with_a_valid_checksum_are_detected():
    header = struct.pack("<8sHHIQQ", MAGIC, 1, 0, BS, 4 * BS, 4)
    run = struct.pack("<BI", 0, 5)  # five blocks in a four-block disk
    with pytest.raises(ManifestCorruptError, match="overflows"):
        DiskManifest.decode(_resealed(header + run))
    with pytest.raises(ManifestCorruptError, match="cover"):
        DiskManifest.decode(_resealed(header + struct.pack("<BI", 0, 3)))
    with pytest.raises(ManifestCorruptError, match="version"):
        DiskManifest.decode(_resealed(struct.pack("<8sHHIQQ", MAGIC, 9, 0, BS, 4 * BS, 4) + run))
    with pytest.raises(ManifestCorruptError, match="not a disk manifest"):
        DiskManifest.decode(_resealed(struct.pack("<8sHHIQQ", b"XXXXXXXX", 1, 0, BS, 4 * BS, 4) + run))
    with pytest.raises(ManifestCorruptError, match="block count"):
        DiskManifest.decode(_resealed(struct.pack("<8sHHIQQ", MAGIC, 1, 0, BS, 4 * BS, 5) + run))


def test_inconsistent_arrays_are_refused():
    with pytest.raises(ValueError):
        DiskManifest(2 * BS, BS, bytes(ID_SIZE), b"\x01")


@pytest.mark.parametrize("zero, disk_size, expected", [
    (b"\x00\x01\x00", 2 * 4096 + 100, 4096 + 100),   # the short last block counts at its length
    (b"\x00\x01\x01", 2 * 4096 + 100, 4096),         # ... and not at all when it is zero
    (b"\x01\x01\x01", 3 * 4096, 0),
    (b"\x00\x00\x00", 3 * 4096, 3 * 4096),
])
def test_data_bytes_leave_holes_and_zero_blocks_out(zero, disk_size, expected):
    manifest = DiskManifest(disk_size, 4096, bytes(ID_SIZE) * len(zero), zero)
    assert manifest.data_bytes == expected == sum(manifest.block_length(i) for i, _ in manifest.data_blocks())

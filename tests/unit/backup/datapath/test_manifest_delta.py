"""The disk manifest delta between regions (DESIGN.md 17.5): rebuilds the manifest byte for byte, grows with the
change and refuses every inconsistency."""
import os
import random

import pytest

from cbr_backup.datapath.manifest import ID_SIZE, DiskManifest, empty_manifest
from cbr_backup.datapath.manifest_delta import (ManifestDeltaError, apply_delta, encode_delta, manifest_digest,
                                                namespace_key_check)

BLOCK = 128 << 10


def manifest(blocks: int, seed: int, zero_every: int = 5, size: int | None = None) -> DiskManifest:
    rng = random.Random(seed)
    ids, zero = bytearray(), bytearray()
    for index in range(blocks):
        is_zero = zero_every and index % zero_every == 0
        zero.append(1 if is_zero else 0)
        ids += bytes(ID_SIZE) if is_zero else rng.randbytes(ID_SIZE)
    return DiskManifest(size or blocks * BLOCK, BLOCK, bytes(ids), bytes(zero))


def changed(base: DiskManifest, indexes, seed: int = 99) -> DiskManifest:
    rng = random.Random(seed)
    ids, zero = bytearray(base.ids), bytearray(base.zero)
    for index in indexes:
        ids[index * ID_SIZE:(index + 1) * ID_SIZE] = rng.randbytes(ID_SIZE)
        zero[index] = 0
    return DiskManifest(base.disk_size, base.block_size, bytes(ids), bytes(zero))


def test_without_a_parent_the_delta_rebuilds_the_manifest():
    target = manifest(3000, 1).encode()
    assert apply_delta(encode_delta(target, None), None) == target


def test_a_changed_disk_sends_only_its_changes():
    parent = manifest(16384, 2)  # a 2 GiB disk at 128 KiB
    child = changed(parent, range(100, 16384, 100))  # ~1% of the blocks
    delta = encode_delta(child.encode(), parent.encode())
    assert apply_delta(delta, parent.encode()) == child.encode()
    assert len(delta) < 164 * 32 + 2 * 164 * 5 + 200   # 32 B per changed block and a few per op
    unchanged = encode_delta(parent.encode(), parent.encode())
    assert len(unchanged) < 200 and apply_delta(unchanged, parent.encode()) == parent.encode()


def test_a_grown_or_shrunk_disk_and_a_short_last_block():
    parent = manifest(100, 3)
    grown = manifest(150, 3, size=150 * BLOCK - 1000)
    for child, base in ((grown, parent), (parent, grown), (empty_manifest(64 * BLOCK, BLOCK), parent)):
        assert apply_delta(encode_delta(child.encode(), base.encode()), base.encode()) == child.encode()


def test_a_parent_of_another_block_size_is_no_parent():
    parent = DiskManifest(1 << 20, 64 << 10, os.urandom(16 * ID_SIZE), bytes(16))
    child = manifest(8, 4)
    delta = encode_delta(child.encode(), parent.encode())
    assert apply_delta(delta, None) == child.encode()


def test_the_wrong_parent_is_refused():
    parent, other = manifest(50, 5), manifest(50, 6)
    delta = encode_delta(changed(parent, [7]).encode(), parent.encode())
    for wrong in (other.encode(), None):
        with pytest.raises(ManifestDeltaError, match="parent"):
            apply_delta(delta, wrong)


def test_altered_deltas_are_refused():
    parent = manifest(50, 7)
    delta = bytearray(encode_delta(changed(parent, [3, 40]).encode(), parent.encode()))
    for position in range(len(delta)):
        altered = bytearray(delta)
        altered[position] ^= 0x01
        with pytest.raises(ManifestDeltaError):
            apply_delta(bytes(altered), parent.encode())
    for cut in (0, 10, len(delta) - 33, len(delta) - 1):
        with pytest.raises(ManifestDeltaError):
            apply_delta(bytes(delta[:cut]), parent.encode())
    with pytest.raises(ManifestDeltaError):
        apply_delta(bytes(delta) + b"\0", parent.encode())


def test_digest_and_namespace_check():
    target = manifest(10, 8).encode()
    assert manifest_digest(target) == target[-32:]
    key = os.urandom(32)
    assert namespace_key_check(key) == namespace_key_check(key) != namespace_key_check(os.urandom(32))
    assert len(namespace_key_check(key)) == 32

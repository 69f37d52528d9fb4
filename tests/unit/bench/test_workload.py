"""The benchmark's workload generator: deterministic for a seed, real holes, a 1% change step."""

import hashlib
import random

import pytest

from bench.workload import (CHANGE_BLOCK, MIB, TextSource, allocated_bytes, generate, mutate, sha256_file,
                            sparse_copy)


def _blocks(path):
    data = path.read_bytes()
    return [data[i:i + CHANGE_BLOCK] for i in range(0, len(data), CHANGE_BLOCK)]


def test_same_seed_same_disk_other_seed_other_disk(tmp_path):
    a, b, c = tmp_path / "a.raw", tmp_path / "b.raw", tmp_path / "c.raw"
    layout_a = generate(a, 16 * MIB, seed=5, sync=False)
    layout_b = generate(b, 16 * MIB, seed=5, sync=False)
    generate(c, 16 * MIB, seed=6, sync=False)
    assert layout_a.to_dict() == layout_b.to_dict()
    assert sha256_file(a) == sha256_file(b) != sha256_file(c)
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()


def test_layout_mix_and_real_holes(tmp_path):
    disk = tmp_path / "disk.raw"
    layout = generate(disk, 64 * MIB, seed=1, sync=False)
    assert disk.stat().st_size == 64 * MIB
    counts = layout.summary()["extents"]
    assert sum(counts.values()) == 64
    assert all(n > 0 for n in counts.values())
    assert 0.15 < counts["hole"] / 64 < 0.55
    data = disk.read_bytes()
    for i in layout.holes:
        assert data[i * MIB:(i + 1) * MIB] == bytes(MIB)
    for i in layout.text:
        assert data[i * MIB:(i + 1) * MIB].endswith(b"\n") or b"\n" in data[i * MIB:(i + 1) * MIB]
    # Holes are never written: only the data extents are allocated.
    allocated = allocated_bytes(disk)
    if allocated == disk.stat().st_size:
        pytest.skip("this file system does not report holes")
    assert allocated == (len(layout.text) + len(layout.random)) * MIB


def test_text_is_compressible_and_not_repeated():
    import zlib
    source = TextSource(1)
    rng = random.Random(2)
    one, two = source.block(rng, MIB), source.block(rng, MIB)
    assert len(one) == len(two) == MIB and one != two
    assert len(zlib.compress(one, 6)) < MIB / 2


def test_mutate_rewrites_one_percent_of_the_64k_blocks(tmp_path):
    disk = tmp_path / "disk.raw"
    generate(disk, 32 * MIB, seed=1, sync=False)
    before = _blocks(disk)
    changed = mutate(disk, 1.0, seed=7, sync=False)
    after = _blocks(disk)
    assert len(changed) == round(len(before) * 0.01) == 5
    differing = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert differing == changed
    assert disk.stat().st_size == 32 * MIB

    again = tmp_path / "again.raw"
    generate(again, 32 * MIB, seed=1, sync=False)
    assert mutate(again, 1.0, seed=7, sync=False) == changed
    assert sha256_file(again) == sha256_file(disk)


def test_sparse_copy_keeps_bytes_and_holes(tmp_path):
    source, copy = tmp_path / "s.raw", tmp_path / "c.raw"
    generate(source, 16 * MIB, seed=3, sync=False)
    sparse_copy(source, copy, sync=False)
    assert sha256_file(copy) == sha256_file(source)
    assert allocated_bytes(copy) == allocated_bytes(source)

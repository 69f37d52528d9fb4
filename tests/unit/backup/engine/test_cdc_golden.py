"""Pinned chunk boundaries: these numbers change only with a deliberate change of the chunk format."""
from __future__ import annotations

import hashlib
import random

from cbr_backup.engine import cdc_cuts
from cbr_backup.engine import reference


def text_like(seed: int, size: int) -> bytes:
    rnd = random.Random(seed)
    words = ["backup", "vault", "chunk", "restore", "snapshot", "disk", "policy", "the", "a", "of", "and", "replica"]
    out: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out).encode()[:size]


def test_gear_table_and_masks_are_pinned():
    table = b"".join(value.to_bytes(8, "little") for value in reference.GEAR)
    assert hashlib.sha256(table).hexdigest() == "589369fa58310bf1e2b9d2b91213cc05ca3c925d11ffbf0238aa0ca040a5753f"
    assert reference.GEAR[0] == 0x795669A4B03B60D1
    assert reference.cdc_mask(15) == 0x4924492449240000  # avg 8192: MaskS
    assert reference.cdc_mask(11) == 0x4442221110880000  # avg 8192: MaskL


def test_random_300k():
    data = random.Random(42).randbytes(300_000)
    expected = [
        10771, 20198, 29447, 40217, 46134, 55062, 58148, 67217, 75660, 82681, 97175, 108933, 114381, 117702,
        128858, 139969, 150231, 155170, 163871, 178828, 187091, 196177, 205902, 217145, 225423, 234782,
        243570, 252833, 265691, 274874, 286572, 296483, 300000,
    ]  # fmt: skip
    assert cdc_cuts(data, 2048, 8192, 65536, final=True) == expected
    assert reference.cdc_cuts(data, 2048, 8192, 65536, final=True) == expected
    assert cdc_cuts(data, 2048, 8192, 65536) == expected[:-1]


def test_random_small_sizes():
    data = random.Random(7).randbytes(6000)
    expected = [
        315, 543, 680, 991, 1396, 1627, 1914, 2180, 2482, 2743, 2982, 3270, 3543, 3976, 4493, 4755, 5084,
        5462, 5743, 6000,
    ]  # fmt: skip
    assert cdc_cuts(data, 64, 256, 1024, final=True) == expected
    assert reference.cdc_cuts(data, 64, 256, 1024, final=True) == expected


def test_text_like():
    data = text_like(3, 100_000)
    assert len(data) == 99_999
    expected = [
        2764, 5067, 6859, 9145, 12623, 13475, 17998, 20685, 22802, 25170, 27332, 30230, 32748, 36533, 37699,
        40163, 42277, 43133, 43728, 46870, 49297, 51451, 53675, 57228, 58099, 60534, 63218, 65371, 68100,
        70261, 73303, 74493, 77001, 79891, 82468, 85017, 87590, 89932, 92062, 94434, 96532, 98978, 99999,
    ]  # fmt: skip
    assert cdc_cuts(data, 512, 2048, 8192, final=True) == expected
    assert reference.cdc_cuts(data, 512, 2048, 8192, final=True) == expected

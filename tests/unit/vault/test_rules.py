"""The vault rules as pure functions: the edges of every limit."""
from __future__ import annotations

import uuid

import pytest

from cbr_vault.domain import errors, rules
from cbr_vault.domain.model import Tag


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64])
def test_good_names(name):
    assert rules.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "vault\n", "ä", "a.b", None])
def test_bad_names(name):
    with pytest.raises(errors.InvalidVaultNameError):
        rules.check_name(name)


def test_size_limits():
    assert rules.check_size_gb(1) == 1 and rules.check_size_gb(10_485_760) == 10_485_760
    for size in (0, -1, 10_485_761):
        with pytest.raises(errors.InvalidCapacityError):
            rules.check_size_gb(size)


def test_types():
    rules.check_types("server", "replication", "app_consistent")
    rules.check_types("disk", "replication", "crash_consistent")  # issue 12: disk replicas too
    with pytest.raises(errors.InvalidProtectTypeError):
        rules.check_types("disk", "archive", "crash_consistent")
    with pytest.raises(errors.InvalidConsistencyError):
        rules.check_types("turbo", "backup", "app_consistent")
    with pytest.raises(errors.InvalidObjectTypeError):
        rules.check_types("unknown", "backup", "crash_consistent")


def test_tags():
    assert len(rules.check_tags([Tag(f"k{i}", "v" * 43) for i in range(20)])) == 20
    assert rules.check_tag(Tag("k" * 36, "")) == Tag("k" * 36, "")
    with pytest.raises(errors.TooManyTagsError):
        rules.check_tags([Tag(f"k{i}", "v") for i in range(21)])
    for bad in (Tag("", "v"), Tag("k" * 37, "v"), Tag("k", "v" * 44), Tag(" k", "v"), *(
            Tag(f"a{c}b", "v") for c in "=*<>\\,|/\x00\x1f")):
        with pytest.raises(errors.InvalidTagError):
            rules.check_tag(bad)


def test_ids_and_paging():
    value = str(uuid.uuid4())
    assert rules.check_id(value.upper(), "vault_id") == value
    for bad in ("", "x", value + "0", "{" + value + "}"):
        with pytest.raises(errors.InvalidIdError):
            rules.check_id(bad, "vault_id")
    with pytest.raises(errors.DuplicateResourceError):
        rules.check_ids([value, value.upper()], "resource_id")
    assert rules.check_page(0, 0) == (1000, 0) and rules.check_page(1000, 5) == (1000, 5)
    for limit, offset in ((-1, 0), (1001, 0), (1, -1)):
        with pytest.raises(errors.InvalidPagingError):
            rules.check_page(limit, offset)


GIB = rules.GIB


@pytest.mark.parametrize("size_gb, used_bytes, expected", [
    (10, 0, 10),                # empty
    (10, 10 * GIB, 10),         # exactly full still holds it
    (10, 10 * GIB + 1, 13),     # one byte over: one step, ceil(12.5)
    (10, 11 * GIB, 13),
    (10, 13 * GIB + 1, 17),     # 10 -> 13 -> 17: each step is 1.25x of the last, rounded up
    (10, 100 * GIB, 109),       # 10 13 17 22 28 35 44 55 69 87 109: the first step that holds it, not 125
    (1, GIB + 1, 2),            # the smallest vault still grows by a whole GiB
    (1, 3 * GIB, 3),            # 1 -> 2 -> 3 (ceil(2.5))
    (8_388_609, 8_388_610 * GIB, rules.MAX_SIZE_GB),   # a step past the maximum stops at it
    (100, 20_000_000 * GIB, rules.MAX_SIZE_GB),        # more than the maximum holds: capped, no endless loop
    (rules.MAX_SIZE_GB, (rules.MAX_SIZE_GB + 1) * GIB, rules.MAX_SIZE_GB),
])
def test_expanded_size_gb(size_gb, used_bytes, expected):
    assert rules.expanded_size_gb(size_gb, used_bytes) == expected

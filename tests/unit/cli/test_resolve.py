"""Picking the one object a name or short id means."""
from __future__ import annotations

import argparse

import pytest

from cbr_cli.arguments import VAULT_ID, server_disks
from cbr_cli.resolve import AmbiguousNameError, Candidate, NameNotFoundError, Ref, pick, short_id

A = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
B = "6f9619ff-0000-4000-8000-000000000000"
C = "0b0b0b0b-1111-4111-8111-111111111111"


def candidates(*pairs) -> list[Candidate]:
    return [Candidate(object_id, name, "disk") for object_id, name in pairs]


def test_exact_name_then_id_prefix():
    found = candidates((A, "data"), (B, "data-2"), (C, "6f9619ff"))
    assert pick(Ref("disk", "data"), found) == A  # exact, not "contains"
    assert pick(Ref("disk", "6f9619ff-8b86"), found) == A
    assert pick(Ref("disk", "6f9619ff"), found) == C  # a name wins over an id prefix
    assert pick(Ref("disk", "0B0B0B0B"), found) == C
    with pytest.raises(NameNotFoundError, match="no disk named 'dat'"):
        pick(Ref("disk", "dat"), found)
    with pytest.raises(NameNotFoundError):
        pick(Ref("disk", "6f96"), found)  # shorter than 8: not an id prefix


def test_ambiguity_lists_every_candidate():
    with pytest.raises(AmbiguousNameError) as raised:
        pick(Ref("disk", "twin"), candidates((A, "twin"), (B, "twin")))
    assert [c.object_id for c in raised.value.candidates] == sorted([A, B])
    assert f"twin (disk {A})" in str(raised.value) and f"twin (disk {B})" in str(raised.value)
    with pytest.raises(AmbiguousNameError):
        pick(Ref("disk", "6f9619ff"), candidates((A, "x"), (B, "y")))
    many = candidates(*((f"{i:08x}-0000-4000-8000-000000000000", "auto") for i in range(12)))
    with pytest.raises(AmbiguousNameError, match="; and 2 more; give the id$") as raised:
        pick(Ref("disk", "auto"), many)
    assert len(raised.value.candidates) == 12


def test_arguments_parse_to_ids_or_refs():
    assert VAULT_ID(A.upper()) == A and VAULT_ID("nightly") == Ref("vault", "nightly")
    with pytest.raises(argparse.ArgumentTypeError):
        VAULT_ID("  ")
    assert server_disks(f"web={A},data") == (Ref("server", "web"), [A, Ref("disk", "data")])
    assert short_id(A) == "6f9619ff" and short_id("name") == "name"

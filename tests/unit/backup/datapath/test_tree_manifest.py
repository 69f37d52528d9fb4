"""Tree manifest: encode/decode round trips, and every malformed manifest refused by decode (and construction)."""
import dataclasses
import os
import struct

import blake3
import pytest

from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.datapath.tree_manifest import (MAGIC, EntryKind, TreeEntry, TreeManifest, encode_entries)

D, F, L, H, P = EntryKind.DIRECTORY, EntryKind.FILE, EntryKind.SYMLINK, EntryKind.HARDLINK, EntryKind.FIFO
ROOT = TreeEntry(b"", D, mode=0o755)
ID_A, ID_B = os.urandom(32), os.urandom(32)


def sample_entries():
    return (
        ROOT,
        TreeEntry(b"dir", D, mode=0o1777, uid=1, gid=2, atime_ns=-5, mtime_ns=10**18,
                  xattrs=((b"user.a", b""), (b"user.b", b"\x00\xff" * 100))),
        TreeEntry(b"dir/empty", F, mode=0o644, ctime_ns=7, inode=42),
        TreeEntry(b"dir/data", F, mode=0o4755, size=3 << 20, ctime_ns=8, inode=43,
                  segments=((ID_A, 1 << 20), (None, 1 << 20), (ID_B, 1 << 20))),
        TreeEntry(b"dir/sparse", F, size=1 << 40, ctime_ns=9, inode=44, segments=((None, 1 << 40),)),
        TreeEntry(b"dir/again", H, target=b"dir/data"),
        TreeEntry(b"link", L, mode=0o777, target=b"/anywhere/../at all"),
        TreeEntry(b"fifo", P, mode=0o600),
        TreeEntry(b"name with \xff bytes", D),
    )


def reseal(body: bytes) -> bytes:
    return body + blake3.blake3(body).digest()


def test_round_trip():
    manifest = TreeManifest(sample_entries())
    decoded = TreeManifest.decode(manifest.encode())
    assert decoded == manifest
    assert decoded.chunk_ids() == {ID_A, ID_B}
    assert decoded.chunk_sizes() == {ID_A: 1 << 20, ID_B: 1 << 20}
    assert decoded.logical_bytes == (3 << 20) + (1 << 40)
    assert decoded.entries[3].kind is EntryKind.FILE


def test_root_only():
    manifest = TreeManifest((ROOT,))
    assert TreeManifest.decode(manifest.encode()) == manifest
    assert manifest.chunk_ids() == set()


def test_every_byte_is_covered_by_the_checksum():
    encoded = bytearray(TreeManifest(sample_entries()).encode())
    for position in (0, 12, len(encoded) // 2, len(encoded) - 40, len(encoded) - 1):
        damaged = bytearray(encoded)
        damaged[position] ^= 0x01
        with pytest.raises(ManifestCorruptError, match="checksum"):
            TreeManifest.decode(bytes(damaged))


@pytest.mark.parametrize("cut", [1, 33, 100])
def test_truncated(cut):
    encoded = TreeManifest(sample_entries()).encode()
    with pytest.raises(ManifestCorruptError):
        TreeManifest.decode(reseal(encoded[:-32 - cut]))  # even with a checksum that matches
    with pytest.raises(ManifestCorruptError):
        TreeManifest.decode(encoded[:-cut])


def test_trailing_bytes():
    body = TreeManifest(sample_entries()).encode()[:-32]
    with pytest.raises(ManifestCorruptError):
        TreeManifest.decode(reseal(body + b"\x01\x00"))


@pytest.mark.parametrize("field,value,message", [
    (0, b"CBRDMF\r\n", "not a tree manifest"), (1, 2, "version"), (2, 1, "version"), (3, 3, "entries")])
def test_header_checks(field, value, message):
    body = bytearray(TreeManifest(sample_entries()).encode()[:-32])
    header = list(struct.unpack_from("<8sHHQ", body))
    header[field] = value
    struct.pack_into("<8sHHQ", body, 0, *header)
    with pytest.raises(ManifestCorruptError, match=message):
        TreeManifest.decode(reseal(bytes(body)))


def crafted(*entries):
    """Bytes of a manifest whose entries break a rule (the encoder does not check), sealed correctly."""
    return encode_entries((ROOT,) + entries)


BAD_PATHS = [b"..", b".", b"../etc", b"/etc", b"dir/../../x", b"dir/./x", b"dir//x", b"dir/", b"",
             b"a\0b", b"x" * 256]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_paths_that_leave_the_tree_are_refused(path):
    entries = (TreeEntry(b"dir", D), TreeEntry(path, F, ctime_ns=1))
    with pytest.raises(ManifestCorruptError):
        TreeManifest.decode(crafted(*entries))
    with pytest.raises(ManifestCorruptError):
        TreeManifest((ROOT,) + entries)


def test_unknown_kind_is_refused():
    with pytest.raises(ManifestCorruptError, match="unknown entry kind"):
        TreeManifest.decode(crafted(TreeEntry(b"x", 9)))
    with pytest.raises(ManifestCorruptError, match="unknown entry kind"):
        TreeManifest.decode(crafted(TreeEntry(b"x", 0)))


def test_unknown_segment_kind_is_refused():
    entry = TreeEntry(b"f", F, size=5, segments=((ID_A, 5),))
    body = bytearray(crafted(entry)[:-32])
    tag = body.index(ID_A) - 5  # tag u8 | raw size u32 | id
    assert body[tag] == 1
    body[tag] = 7
    with pytest.raises(ManifestCorruptError, match="segment kind"):
        TreeManifest.decode(reseal(bytes(body)))


@pytest.mark.parametrize("entries,message", [
    ((TreeEntry(b"a/b", D), TreeEntry(b"a", D)), "parent"),                        # child before parent
    ((TreeEntry(b"f", F), TreeEntry(b"f/x", F)), "parent"),                        # parent is a file
    ((TreeEntry(b"a", D), TreeEntry(b"a", F)), "twice"),
    ((TreeEntry(b"h", H, target=b"f"), TreeEntry(b"f", F)), "hard link"),         # link before its target
    ((TreeEntry(b"d", D), TreeEntry(b"h", H, target=b"d")), "hard link"),         # link to a directory
    ((TreeEntry(b"h", H, target=b"nowhere"),), "hard link"),
    ((TreeEntry(b"f", F), TreeEntry(b"h", H, target=b"f"), TreeEntry(b"i", H, target=b"h")), "hard link"),
    ((TreeEntry(b"h", H, target=b""),), "hard link"),                              # to the root
    ((TreeEntry(b"f", F, size=10, segments=((ID_A, 9),)),), "segments cover"),
    ((TreeEntry(b"f", F, size=9, segments=((ID_A, 9), (None, 0))),), "holes"),
    ((TreeEntry(b"f", F, size=9, segments=((None, 4), (None, 5))),), "holes"),
    ((TreeEntry(b"f", F, size=0, segments=((ID_A, 0),)),), "chunk"),
    ((TreeEntry(b"f", F, size=65 << 20, segments=((ID_A, 65 << 20),)),), "chunk"),
    ((TreeEntry(b"f", F, mode=0o100644),), "mode"),
    ((TreeEntry(b"l", L, target=b""),), "target"),
    ((TreeEntry(b"l", L, target=b"a\0b"),), "target"),
    ((TreeEntry(b"l", L, target=b"x" * 4096),), "target"),
    ((TreeEntry(b"d", D, xattrs=((b"user.b", b""), (b"user.a", b""))),), "extended"),
    ((TreeEntry(b"d", D, xattrs=((b"user.a", b""), (b"user.a", b""))),), "extended"),
    ((TreeEntry(b"d", D, xattrs=((b"user.a", b"x" * (64 << 10 | 1)),)),), "extended"),
])
def test_rules(entries, message):
    with pytest.raises(ManifestCorruptError, match=message):
        TreeManifest.decode(crafted(*entries))
    with pytest.raises(ManifestCorruptError, match=message):
        TreeManifest((ROOT,) + entries)


@pytest.mark.parametrize("entry,message", [
    (TreeEntry(b"h", H, target=b"f", mode=0o644), "fields of its own"),
    (TreeEntry(b"d", D, size=1), "content"),
    (TreeEntry(b"p", P, inode=3), "content"),
    (TreeEntry(b"p", P, target=b"x"), "target"),
])
def test_fields_a_kind_has_no_room_for_are_refused(entry, message):
    # The format cannot carry them, so only construction can see them; a round trip would lose them.
    with pytest.raises(ManifestCorruptError, match=message):
        TreeManifest((ROOT, TreeEntry(b"f", F), entry))


@pytest.mark.parametrize("first", [TreeEntry(b"", F), TreeEntry(b"x", D), None])
def test_the_root_comes_first(first):
    entries = () if first is None else (first,)
    with pytest.raises(ManifestCorruptError, match="root"):
        TreeManifest.decode(encode_entries(entries))


def test_hostile_counts_fail_without_allocating():
    entry = TreeEntry(b"f", F, size=5, segments=((ID_A, 5),))
    body = bytearray(crafted(entry)[:-32])
    count_at = body.index(ID_A) - 5 - 4  # segment_count u32 precedes the first segment
    struct.pack_into("<I", body, count_at, 0xFFFF_FFFF)
    with pytest.raises(ManifestCorruptError, match="segments"):
        TreeManifest.decode(reseal(bytes(body)))


def test_entries_are_immutable():
    manifest = TreeManifest(sample_entries())
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.entries[1].path = b".."  # type: ignore[misc]
    assert isinstance(manifest.entries, tuple)
    assert MAGIC == b"CBRTMF\r\n"

"""The tree manifest: a directory tree as a list of entries (path, kind, metadata, file chunks), binary form.

Binary form (little endian; DESIGN.md "File-system (tree) backups"):

    header   magic "CBRTMF\\r\\n" | version u16 (=1) | flags u16 (=0) | entry_count u64          (20 bytes)
    entries  kind u8 | path_len u32 | path
             HARDLINK: target_len u32 | target (path of an earlier FILE entry); nothing else
             others:   mode u32 | uid u32 | gid u32 | atime_ns i64 | mtime_ns i64
                       | xattr_count u32 | xattr_count x (name_len u8 | name | value_len u32 | value)
             FILE:     size u64 | ctime_ns i64 | inode u64 | segment_count u32
                       | segments: 0 u8 | hole length u64,  or  1 u8 | raw_size u32 | chunk id (32)
             SYMLINK:  target_len u32 | target
    trailer  BLAKE3-256 (unkeyed) of every byte before it                                         (32 bytes)

The first entry is the root directory (empty path); every other path is relative, "/"-separated, and its
parent directory comes before it. A file's segments cover its size exactly, in order.
"""
from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass
from typing import Iterable

import blake3

from cbr_backup.datapath.errors import ManifestCorruptError

MAGIC = b"CBRTMF\r\n"
VERSION = 1
ID_SIZE = 32
MAX_NAME = 255                 # NAME_MAX: one path component
MAX_LINK_TARGET = 4095         # PATH_MAX less the NUL: a symlink's target
MAX_XATTR_VALUE = 64 << 10     # XATTR_SIZE_MAX
MAX_CHUNK = 64 << 20           # the engine's largest chunk
SEGMENT_HOLE = 0
SEGMENT_CHUNK = 1

_HEADER = struct.Struct("<8sHHQ")
_ENTRY = struct.Struct("<BI")
_LENGTH = struct.Struct("<I")
_META = struct.Struct("<IIIqq")
_FILE = struct.Struct("<QqQI")
_HOLE = struct.Struct("<BQ")
_CHUNK = struct.Struct("<BI32s")
_XATTR_NAME = struct.Struct("<B")
_CHECKSUM_SIZE = 32
_U32 = 0xFFFF_FFFF
_I64 = 1 << 63


class EntryKind(enum.IntEnum):
    DIRECTORY = 1
    FILE = 2
    SYMLINK = 3
    HARDLINK = 4   # a second name of an earlier FILE entry's inode
    FIFO = 5


Segment = tuple[bytes | None, int]  # (chunk id, raw size) of data, or (None, length) of a hole
_KINDS = frozenset(EntryKind)


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One name in the tree. Fields a kind does not use keep their defaults (the format has no room for them).

    ctime_ns and inode serve only the next incremental backup (a file whose size, mtime, ctime and inode
    are unchanged is not read again); ctime_ns 0 means "changed too recently to be trusted" (tree_backup.py).
    """
    path: bytes
    kind: EntryKind
    mode: int = 0                   # permission bits, setuid/setgid/sticky included (0o7777)
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()   # (name, value), sorted by name
    size: int = 0                   # FILE
    ctime_ns: int = 0               # FILE
    inode: int = 0                  # FILE
    segments: tuple[Segment, ...] = ()             # FILE
    target: bytes = b""             # SYMLINK: its target, verbatim; HARDLINK: the path it is another name of


@dataclass(frozen=True)
class TreeManifest:
    """A whole tree; constructing one checks every rule the decoder checks."""
    entries: tuple[TreeEntry, ...]

    def __post_init__(self):
        object.__setattr__(self, "entries", tuple(self.entries))
        check_entries(self.entries)

    def chunk_ids(self) -> set[bytes]:
        return {chunk for entry in self.entries for chunk, _ in entry.segments if chunk is not None}

    def chunk_sizes(self) -> dict[bytes, int]:
        """id -> raw size of every chunk the tree references (what GC's mark and verify need)."""
        return {chunk: length for entry in self.entries for chunk, length in entry.segments if chunk is not None}

    @property
    def logical_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    def encode(self) -> bytes:
        return encode_entries(self.entries)

    @classmethod
    def decode(cls, data: bytes) -> "TreeManifest":
        """Parses and checks an encoded manifest; ManifestCorruptError on any defect."""
        view = memoryview(data)
        if len(view) < _HEADER.size + _CHECKSUM_SIZE:
            raise ManifestCorruptError("tree manifest is truncated")
        body, checksum = view[:-_CHECKSUM_SIZE], view[-_CHECKSUM_SIZE:]
        if not hmac.compare_digest(blake3.blake3(body).digest(), checksum):
            raise ManifestCorruptError("tree manifest checksum mismatch")
        magic, version, flags, count = _HEADER.unpack_from(body)
        if magic != MAGIC:
            raise ManifestCorruptError("not a tree manifest")
        if version != VERSION or flags != 0:
            raise ManifestCorruptError(f"unsupported tree manifest version {version} (flags {flags:#x})")
        reader = _Reader(body, _HEADER.size)
        entries = []
        while not reader.at_end():
            entries.append(_decode_entry(reader))
        if len(entries) != count:
            raise ManifestCorruptError(f"tree manifest holds {len(entries)} entries, its header says {count}")
        return cls(tuple(entries))


def encode_entries(entries: Iterable[TreeEntry]) -> bytes:
    """The binary form of entries, without checking them (TreeManifest checks; tests craft bad manifests)."""
    entries = list(entries)
    out = bytearray(_HEADER.pack(MAGIC, VERSION, 0, len(entries)))
    for entry in entries:
        out += _ENTRY.pack(entry.kind, len(entry.path)) + entry.path
        if entry.kind == EntryKind.HARDLINK:
            out += _LENGTH.pack(len(entry.target)) + entry.target
            continue
        if entry.kind not in _KINDS:
            continue  # an unknown kind has no known body
        out += _META.pack(entry.mode, entry.uid, entry.gid, entry.atime_ns, entry.mtime_ns)
        out += _LENGTH.pack(len(entry.xattrs))
        for name, value in entry.xattrs:
            out += _XATTR_NAME.pack(len(name)) + name + _LENGTH.pack(len(value)) + value
        if entry.kind == EntryKind.FILE:
            out += _FILE.pack(entry.size, entry.ctime_ns, entry.inode, len(entry.segments))
            for chunk, length in entry.segments:
                out += _HOLE.pack(SEGMENT_HOLE, length) if chunk is None else _CHUNK.pack(SEGMENT_CHUNK, length, chunk)
        elif entry.kind == EntryKind.SYMLINK:
            out += _LENGTH.pack(len(entry.target)) + entry.target
    out += blake3.blake3(out).digest()
    return bytes(out)


class _Reader:
    """Bounds-checked reads from the manifest body: running past its end is corruption, never a short slice."""

    def __init__(self, body: memoryview, position: int):
        self.body = body
        self.position = position

    def at_end(self) -> bool:
        return self.position >= len(self.body)

    def left(self) -> int:
        return len(self.body) - self.position

    def unpack(self, layout: struct.Struct) -> tuple:
        if self.position + layout.size > len(self.body):
            raise ManifestCorruptError("tree manifest is truncated inside an entry")
        values = layout.unpack_from(self.body, self.position)
        self.position += layout.size
        return values

    def take(self, length: int) -> bytes:
        if self.position + length > len(self.body):
            raise ManifestCorruptError("tree manifest is truncated inside an entry")
        data = bytes(self.body[self.position:self.position + length])
        self.position += length
        return data


def _decode_entry(reader: _Reader) -> TreeEntry:
    kind, path_length = reader.unpack(_ENTRY)
    path = reader.take(path_length)
    if kind == EntryKind.HARDLINK:
        (target_length,) = reader.unpack(_LENGTH)
        return TreeEntry(path, EntryKind.HARDLINK, target=reader.take(target_length))
    try:
        kind = EntryKind(kind)
    except ValueError:
        raise ManifestCorruptError(f"unknown entry kind {kind} at {path!r}") from None
    mode, uid, gid, atime_ns, mtime_ns = reader.unpack(_META)
    (xattr_count,) = reader.unpack(_LENGTH)
    if xattr_count * (_XATTR_NAME.size + _LENGTH.size) > reader.left():
        raise ManifestCorruptError(f"{path!r}: more extended attributes than bytes")
    xattrs = []
    for _ in range(xattr_count):
        (name_length,) = reader.unpack(_XATTR_NAME)
        name = reader.take(name_length)
        (value_length,) = reader.unpack(_LENGTH)
        xattrs.append((name, reader.take(value_length)))
    fields = dict(mode=mode, uid=uid, gid=gid, atime_ns=atime_ns, mtime_ns=mtime_ns, xattrs=tuple(xattrs))
    if kind == EntryKind.FILE:
        size, ctime_ns, inode, segment_count = reader.unpack(_FILE)
        if segment_count * _HOLE.size > reader.left():
            raise ManifestCorruptError(f"{path!r}: more segments than bytes")
        segments = []
        for _ in range(segment_count):
            if reader.at_end():
                raise ManifestCorruptError("tree manifest is truncated inside an entry")
            tag = reader.body[reader.position]
            if tag == SEGMENT_HOLE:
                segments.append((None, reader.unpack(_HOLE)[1]))
            elif tag == SEGMENT_CHUNK:
                _, length, chunk = reader.unpack(_CHUNK)
                segments.append((chunk, length))
            else:
                raise ManifestCorruptError(f"{path!r}: unknown segment kind {tag}")
        fields.update(size=size, ctime_ns=ctime_ns, inode=inode, segments=tuple(segments))
    elif kind == EntryKind.SYMLINK:
        (target_length,) = reader.unpack(_LENGTH)
        fields.update(target=reader.take(target_length))
    return TreeEntry(path, kind, **fields)


# The rules (the decoder's and every constructor's)

def check_component(name: bytes) -> None:
    """One path component: a plain name, never a way up, across or out."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > MAX_NAME:
        raise ManifestCorruptError(f"invalid path component {name[:80]!r}")


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent path, name) of a checked non-root path."""
    parent, _, name = path.rpartition(b"/")
    return parent, name


def check_entries(entries: tuple[TreeEntry, ...]) -> None:
    if not entries or entries[0].path != b"" or entries[0].kind != EntryKind.DIRECTORY:
        raise ManifestCorruptError("a tree manifest starts with its root directory")
    _check_common(entries[0])
    kinds: dict[bytes, EntryKind] = {b"": EntryKind.DIRECTORY}
    for entry in entries[1:]:
        path = entry.path
        if not isinstance(path, bytes):
            raise ManifestCorruptError(f"path {path!r} is not bytes")
        for name in path.split(b"/"):
            check_component(name)
        if path in kinds:
            raise ManifestCorruptError(f"{path!r} appears twice")
        if kinds.get(split_path(path)[0]) != EntryKind.DIRECTORY:
            raise ManifestCorruptError(f"{path!r} comes before its parent directory (or its parent is not one)")
        try:
            kind = EntryKind(entry.kind)
        except ValueError:
            raise ManifestCorruptError(f"unknown entry kind {entry.kind} at {path!r}") from None
        if kind == EntryKind.HARDLINK:
            if kinds.get(entry.target) != EntryKind.FILE:
                raise ManifestCorruptError(f"hard link {path!r} must name an earlier regular file, "
                                           f"not {entry.target[:80]!r}")
            if entry != TreeEntry(path, kind, target=entry.target):
                raise ManifestCorruptError(f"hard link {path!r} carries fields of its own")
        else:
            _check_common(entry)
        kinds[path] = kind


def _check_common(entry: TreeEntry) -> None:
    path = entry.path
    if not 0 <= entry.mode <= 0o7777:
        raise ManifestCorruptError(f"{path!r}: mode {entry.mode:#o} has more than permission bits")
    if not (0 <= entry.uid <= _U32 and 0 <= entry.gid <= _U32):
        raise ManifestCorruptError(f"{path!r}: owner out of range")
    if not all(-_I64 <= t < _I64 for t in (entry.atime_ns, entry.mtime_ns, entry.ctime_ns)):
        raise ManifestCorruptError(f"{path!r}: time out of range")
    previous = b""
    for name, value in entry.xattrs:
        if not name or len(name) > MAX_NAME or b"\0" in name or name <= previous:
            raise ManifestCorruptError(f"{path!r}: extended attribute names must be valid, sorted and distinct")
        if len(value) > MAX_XATTR_VALUE:
            raise ManifestCorruptError(f"{path!r}: extended attribute {name!r} is too large")
        previous = name
    if entry.kind == EntryKind.FILE:
        _check_segments(entry)
    elif entry.size or entry.segments or entry.ctime_ns or entry.inode:
        raise ManifestCorruptError(f"{path!r}: only regular files have content")
    if entry.kind == EntryKind.SYMLINK:
        if not entry.target or b"\0" in entry.target or len(entry.target) > MAX_LINK_TARGET:
            raise ManifestCorruptError(f"symlink {path!r} has an invalid target")
    elif entry.target:
        raise ManifestCorruptError(f"{path!r}: only links have a target")


def _check_segments(entry: TreeEntry) -> None:
    path = entry.path
    if not 0 <= entry.inode < 1 << 64:
        raise ManifestCorruptError(f"{path!r}: inode out of range")
    total = 0
    previous_hole = False
    for chunk, length in entry.segments:
        if chunk is None:
            if length <= 0 or previous_hole:
                raise ManifestCorruptError(f"{path!r}: holes must be non-empty and maximal")
        elif not (isinstance(chunk, bytes) and len(chunk) == ID_SIZE and 0 < length <= MAX_CHUNK):
            raise ManifestCorruptError(f"{path!r}: invalid chunk reference")
        previous_hole = chunk is None
        total += length
    if total != entry.size:
        raise ManifestCorruptError(f"{path!r}: segments cover {total} bytes of a {entry.size}-byte file")

"""The rules of reads out of a backup (DESIGN.md 18): which backups may be read and how, ranges, paths inside a tree.

All checked before any chunk is read."""
from __future__ import annotations

from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup

READABLE_STATUSES = ("available", "restoring")  # a backup being restored is whole and does not change
MAX_TREE_PATH = 4096
MAX_COMPONENT = 255


def check_image_readable(backup: Backup) -> Backup:
    """A disk backup, or one disk of a server backup, whose data is whole."""
    if backup.resource_type == "server" and not backup.parent_id:
        raise errors.WrongBackupKindError(
            f"backup {backup.backup_id} is a server backup: read the image of one of its per-disk backups "
            f"({', '.join(c.backup_id for c in backup.children) or 'it has none'})")
    if backup.manifest_kind == "tree" or backup.resource_type == "turbo":
        raise errors.WrongBackupKindError(
            f"backup {backup.backup_id} is a file-system backup: list it and read its files instead of an image")
    return _check_status(backup)


def check_tree_readable(backup: Backup) -> Backup:
    """A file-system backup whose data is whole; paths mean nothing in a disk image."""
    if backup.manifest_kind != "tree" and backup.resource_type != "turbo":
        raise errors.WrongBackupKindError(
            f"backup {backup.backup_id} is a {backup.resource_type} backup: it has no paths; read its image "
            f"(or mount it and loop-mount the image) instead")
    return _check_status(backup)


def _check_status(backup: Backup) -> Backup:
    if backup.status not in READABLE_STATUSES or not backup.manifest_id:
        raise errors.BackupStateError(
            f"backup {backup.backup_id} is {backup.status}; only available backups can be read")
    return backup


def check_range(offset: int, length: int, size: int) -> tuple[int, int]:
    """(offset, length) within [0, size]; length 0 means to the end."""
    if offset < 0 or length < 0:
        raise errors.InvalidReadRangeError("offset and length must not be negative")
    if offset > size:
        raise errors.InvalidReadRangeError(f"offset {offset} is past the end ({size} bytes)")
    if length == 0:
        return offset, size - offset
    if offset + length > size:
        raise errors.InvalidReadRangeError(
            f"offset {offset} + length {length} passes the end ({size} bytes); ask for at most {size - offset}")
    return offset, length


def tree_path(path: bytes) -> bytes:
    """A path inside a tree backup as the manifest spells it: '/'-separated, relative; one leading and one
    trailing '/' are accepted ('/docs/' is 'docs'); b'' and b'/' are the root."""
    if len(path) > MAX_TREE_PATH:
        raise errors.InvalidTreePathError(f"path is longer than {MAX_TREE_PATH} bytes")
    trimmed = path[1:] if path.startswith(b"/") else path
    trimmed = trimmed[:-1] if trimmed.endswith(b"/") else trimmed
    if not trimmed:
        return b""
    for part in trimmed.split(b"/"):
        if part in (b"", b".", b"..") or b"\0" in part or len(part) > MAX_COMPONENT:
            raise errors.InvalidTreePathError(
                "path must be '/'-separated names, without '..', '.', empty parts, NUL or names over 255 bytes")
    return trimmed


def restore_paths(paths: list[bytes]) -> tuple[bytes, ...]:
    """The paths a selective restore names: each a tree path (not the root: that is the whole restore), none twice."""
    found = tuple(tree_path(p) for p in paths)
    if any(p == b"" for p in found):
        raise errors.InvalidTreePathError("the root is the whole backup: leave paths empty to restore everything")
    if len(set(found)) != len(found):
        raise errors.InvalidTreePathError("paths names a path twice")
    return found

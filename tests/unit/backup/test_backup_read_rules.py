"""The rules of reads out of a backup: which backups, which ranges, which paths."""
import pytest

from cbr_backup.domain import errors
from cbr_backup.domain.backup_reads import (check_image_readable, check_range, check_tree_readable, restore_paths,
                                            tree_path)
from cbr_backup.domain.backups import Backup


def backup(resource_type="disk", manifest_kind="disk", status="available", parent_id="", children=()):
    return Backup(backup_id="b1", project_id="p", checkpoint_id="c", vault_id="v", resource_id="r",
                  resource_type=resource_type, name="n", status=status, manifest_kind=manifest_kind,
                  manifest_id="m" if manifest_kind else "", parent_id=parent_id, children=list(children))


def test_which_backups_read_how():
    assert check_image_readable(backup()).backup_id == "b1"
    assert check_image_readable(backup(parent_id="server-backup")).backup_id == "b1"  # one disk of a server
    assert check_image_readable(backup(status="restoring")).backup_id == "b1"
    assert check_tree_readable(backup("turbo", "tree")).backup_id == "b1"
    with pytest.raises(errors.WrongBackupKindError, match="server backup"):
        check_image_readable(backup("server", "", children=[backup()]))
    with pytest.raises(errors.WrongBackupKindError, match="file-system"):
        check_image_readable(backup("turbo", "tree"))
    with pytest.raises(errors.WrongBackupKindError, match="no paths"):
        check_tree_readable(backup())
    for status in ("protecting", "deleting", "error", "waiting_delete"):
        with pytest.raises(errors.BackupStateError):
            check_image_readable(backup(status=status))


def test_ranges():
    assert check_range(0, 0, 100) == (0, 100)
    assert check_range(40, 0, 100) == (40, 60)
    assert check_range(100, 0, 100) == (100, 0)   # an empty read at the end tells the size
    assert check_range(10, 90, 100) == (10, 90)
    for offset, length in ((-1, 1), (0, -1), (101, 0), (10, 91)):
        with pytest.raises(errors.InvalidReadRangeError):
            check_range(offset, length, 100)


def test_paths():
    assert tree_path(b"") == tree_path(b"/") == b""
    assert tree_path(b"/docs/") == tree_path(b"docs") == b"docs"
    assert tree_path(b"a/b\xff/c") == b"a/b\xff/c"  # names are bytes, not necessarily UTF-8
    for bad in (b"..", b"a/../b", b"a//b", b"./a", b"a/\0", b"//a", b"x" * 256, b"a/" * 2049):
        with pytest.raises(errors.InvalidTreePathError):
            tree_path(bad)
    assert restore_paths([b"/a", b"b/c"]) == (b"a", b"b/c")
    with pytest.raises(errors.InvalidTreePathError, match="root"):
        restore_paths([b"/"])
    with pytest.raises(errors.InvalidTreePathError, match="twice"):
        restore_paths([b"a", b"/a/"])

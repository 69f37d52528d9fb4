"""File-system (SFS Turbo-style) backups through gRPC: a tree with every kind of entry round-trips, unchanged
files are not read again, and restores never write outside the file system's root."""
from __future__ import annotations

import hashlib
import os
import stat

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.backup.v1 import task_pb2 as tp
from tests.support.backups import backup_now, wait_success, wait_task
from tests.support.calls import BACKUP, MIB, TURBO, create_vault, expect_error, ref

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def build_tree(root: str) -> None:
    os.makedirs(f"{root}/docs/deep/er", exist_ok=True)
    with open(f"{root}/docs/readme.txt", "w") as f:
        f.write("hello backups\n" * 1000)
    with open(f"{root}/docs/deep/er/big.bin", "wb") as f:
        f.write(os.urandom(3 * MIB))
    with open(f"{root}/sparse.img", "wb") as f:
        f.truncate(8 * MIB)
        f.seek(4 * MIB)
        f.write(b"island")
    open(f"{root}/empty", "w").close()
    os.symlink("docs/readme.txt", f"{root}/link-relative")
    os.symlink("/etc/passwd", f"{root}/link-outside")
    os.link(f"{root}/docs/readme.txt", f"{root}/hard")
    os.chmod(f"{root}/docs/readme.txt", 0o640)
    os.utime(f"{root}/docs/deep/er/big.bin", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    try:
        os.setxattr(f"{root}/empty", "user.tag", b"kept")
    except OSError:
        pass  # the file system has no user xattrs


def describe(root: str) -> dict:
    """What a restore must reproduce: per path its kind, mode, size, content hash, link target, mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest, st.st_mtime_ns)
    return found


async def file_system(caller, name: str):
    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name=name))).file_system
    build_tree(fs.path)
    vault = await create_vault(caller, f"{name}-vault", TURBO, BACKUP, resources=[ref(fs)])
    return fs, vault


async def test_tree_round_trip_incremental_and_new_directory(caller):
    fs, vault = await file_system(caller, "share")
    before = describe(fs.path)
    first = await backup_now(caller, vault.vault_id)
    assert first.resource_type == TURBO and first.status == bp.BACKUP_STATUS_AVAILABLE
    assert first.logical_bytes >= 3 * MIB

    # Change one small file; the next backup reads it and not the 3 MiB file.
    with open(f"{fs.path}/docs/new.txt", "w") as f:
        f.write("added later")
    os.unlink(f"{fs.path}/empty")
    second = await backup_now(caller, vault.vault_id)
    tasks = await caller.tasks.ListTasks(tp.ListTasksRequest(vault_id=vault.vault_id,
                                                             operation_type=tp.OPERATION_TYPE_BACKUP))
    read = {t.backup_id: int(t.extra_info["read_bytes"]) for t in tasks.tasks}
    assert read[first.backup_id] >= 3 * MIB and read[second.backup_id] < MIB

    # Restore the first backup over the source: the tree is as it was (new files the backup does not name stay).
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=first.backup_id))
    await wait_success(caller, reply.task_id)
    now = describe(fs.path)
    assert {k: v for k, v in now.items() if k != "docs/new.txt"} == before
    assert os.stat(f"{fs.path}/hard").st_ino == os.stat(f"{fs.path}/docs/readme.txt").st_ino
    with open(f"{fs.path}/sparse.img", "rb") as f:
        assert os.lseek(f.fileno(), 0, os.SEEK_DATA) >= 4 * MIB - 4096  # the hole came back as a hole
    if os.listxattr(f"{fs.path}/empty"):
        assert os.getxattr(f"{fs.path}/empty", "user.tag") == b"kept"

    # Into a new directory under a path: nothing existing is touched.
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=second.backup_id, target_path="restored/here", new_directory=True))
    await wait_success(caller, reply.task_id)
    [made] = os.listdir(f"{fs.path}/restored/here")
    copy = describe(f"{fs.path}/restored/here/{made}")
    assert copy["docs/new.txt"][0] == "file" and "empty" not in copy
    assert copy["docs/deep/er/big.bin"] == before["docs/deep/er/big.bin"]


async def test_restores_never_leave_the_root(caller, tmp_path):
    fs, vault = await file_system(caller, "guarded")
    backup = await backup_now(caller, vault.vault_id)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, f"{fs.path}/escape")  # planted by someone with access to the share

    for bad in ("../x", "/etc", "a/../../b", "a//b", ".", "x\x00y"):
        await expect_error(caller.backups.RestoreBackup(bp.RestoreBackupRequest(
            backup_id=backup.backup_id, target_path=bad)), INVALID,
            "BackupService.6400" if "\x00" in bad else "BackupService.6705")  # NUL: refused at the edge
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id,
                                                                       target_path="escape/inner"))
    task = await wait_task(caller, reply.task_id)
    assert task.status == tp.TASK_STATUS_FAILED and task.error.code == "BackupService.6705"
    assert list(outside.iterdir()) == []

    # A symlink where the backup has a directory is replaced, not followed.
    os.rename(f"{fs.path}/docs", f"{fs.path}/docs-moved")
    os.symlink(outside, f"{fs.path}/docs")
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, reply.task_id)
    assert list(outside.iterdir()) == []
    assert not os.path.islink(f"{fs.path}/docs") and os.path.isfile(f"{fs.path}/docs/readme.txt")


async def test_file_system_backup_refuses_disk_only_fields(caller):
    fs, vault = await file_system(caller, "typed")
    backup = await backup_now(caller, vault.vault_id)
    await expect_error(caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=backup.backup_id, volume_id=fs.resource_id)), INVALID, "BackupService.6704")
    await expect_error(caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
        backup_id=backup.backup_id, name="nope")), INVALID, "BackupService.6704")

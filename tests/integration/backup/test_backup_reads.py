"""Reads out of backups through gRPC (DESIGN.md 18): a disk image's ranges and a tree's entries and files come back
byte-exact, a damaged chunk ends the read with DATA_LOSS, bad requests are refused before any read, other projects
see nothing, read-only callers may read; a selective restore writes only the paths asked for."""
from __future__ import annotations

import os

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath.disk_backup import DEFAULT_BLOCK_SIZE
from tests.integration.backup.test_file_system_backups import file_system
from tests.support.backups import backup_now, disk_in_vault, wait_success
from tests.support.calls import MIB, expect_error
from tests.support.packs import chunk_objects, flip_pack_byte

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


async def collect(stream) -> tuple[bytes, list[bp.BackupData]]:
    """The bytes a read stream covers (holes filled with zeros) and its messages; pieces must be in order."""
    messages = [m async for m in stream]
    out = bytearray()
    for m in messages:
        assert m.offset == (messages[0].offset + len(out)) if out else True
        out += m.data if not m.hole_bytes else bytes(m.hole_bytes)
    return bytes(out), messages


def image_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_disk_image_ranges_holes_and_refusals(services, caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=5)
    original = image_bytes(disk.path)
    backup = await backup_now(caller, vault.vault_id)

    whole, messages = await collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id)))
    assert whole == original and all(m.size == len(original) for m in messages)
    assert all(not m.hole_bytes and len(m.data) <= MIB for m in messages)

    sparse, messages = await collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id, holes=True)))
    assert sparse == original
    # write_disk leaves most of the disk a hole: every all-zero block comes back as a hole, nothing else does
    zero_blocks = sum(1 for at in range(0, len(original), DEFAULT_BLOCK_SIZE)
                      if not original[at:at + DEFAULT_BLOCK_SIZE].strip(b"\0"))
    assert zero_blocks and sum(m.hole_bytes for m in messages) == zero_blocks * DEFAULT_BLOCK_SIZE

    # An unaligned range in the middle, and an empty one at the very end (which still tells the size).
    part, _ = await collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id, offset=123_457, length=3 * MIB + 11)))
    assert part == original[123_457:123_457 + 3 * MIB + 11]
    empty, messages = await collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id, offset=len(original))))
    assert empty == b"" and len(messages) == 1 and messages[0].size == len(original)

    # Refused before anything is read.
    await expect_error(collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id, offset=len(original) - 10, length=11))), INVALID, "BackupService.6771")
    await expect_error(collect(caller.backups.ListBackupTree(bp.ListBackupTreeRequest(
        backup_id=backup.backup_id, path=b"etc"))), INVALID, "BackupService.6774")
    await expect_error(collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id="9a1b7a4e-0000-4000-8000-000000000000"))), NOT_FOUND, "BackupService.6721")

    # Another project's caller sees no such backup; a read-only caller of this project may read it.
    stranger = services.caller()
    await expect_error(collect(stranger.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id))), NOT_FOUND, "BackupService.6721")
    reader = services.caller(caller.project_id, roles=("cbr_readonly",))
    assert (await collect(reader.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id, length=MIB))))[0] == original[:MIB]


async def test_a_damaged_chunk_ends_the_read_with_data_loss(services, caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=6)
    backup = await backup_now(caller, vault.vault_id)
    store = FsChunkStore(services.infra.base / "store")
    packs = sorted(store.path_for(key) for key in chunk_objects(store, vault.vault_id))
    assert len(packs) == 1
    flip_pack_byte(packs[0], 10)  # the first chunk the backup stored

    got = []
    error = await expect_error(collect(_recording(caller.backups.GetBackupImageRange(
        bp.GetBackupImageRangeRequest(backup_id=backup.backup_id)), got)), grpc.StatusCode.DATA_LOSS)
    assert "corrupt" in error.details()
    original = image_bytes(disk.path)
    for m in got:  # whatever came before the damage is the disk's own bytes
        assert m.data == original[m.offset:m.offset + len(m.data)]


async def _recording(stream, into: list):
    async for message in stream:
        into.append(message)
        yield message


async def test_tree_listing_files_and_refusals(services, caller):
    fs, vault = await file_system(caller, "reads")
    backup = await backup_now(caller, vault.vault_id)

    root = [n async for m in caller.backups.ListBackupTree(bp.ListBackupTreeRequest(backup_id=backup.backup_id))
            for n in m.entries]
    by_name = {n.name: n for n in root}
    assert set(by_name) == {b"docs", b"empty", b"hard", b"link-outside", b"link-relative", b"sparse.img"}
    assert by_name[b"docs"].type == bp.TREE_NODE_TYPE_DIRECTORY
    assert by_name[b"link-outside"].type == bp.TREE_NODE_TYPE_SYMLINK
    assert by_name[b"link-outside"].link_target == b"/etc/passwd"
    assert by_name[b"hard"].hard_link_of == b"docs/readme.txt" and by_name[b"hard"].mode == 0o640
    assert by_name[b"sparse.img"].size == 8 * MIB

    deep = [n async for m in caller.backups.ListBackupTree(bp.ListBackupTreeRequest(
        backup_id=backup.backup_id, path=b"/docs/deep/er/")) for n in m.entries]
    big = os.stat(f"{fs.path}/docs/deep/er/big.bin")
    assert [(n.name, n.size, n.mtime_ns) for n in deep] == [(b"big.bin", big.st_size, big.st_mtime_ns)]

    content, _ = await collect(caller.backups.GetBackupFile(bp.GetBackupFileRequest(
        backup_id=backup.backup_id, path=b"docs/deep/er/big.bin")))
    assert content == image_bytes(f"{fs.path}/docs/deep/er/big.bin")
    content, messages = await collect(caller.backups.GetBackupFile(bp.GetBackupFileRequest(
        backup_id=backup.backup_id, path=b"sparse.img", holes=True)))
    assert content == image_bytes(f"{fs.path}/sparse.img")
    assert sum(m.hole_bytes for m in messages) >= 4 * MIB
    via_link, _ = await collect(caller.backups.GetBackupFile(bp.GetBackupFileRequest(
        backup_id=backup.backup_id, path=b"hard", offset=6, length=8)))
    assert via_link == b"backups\n"

    for path, code, cbr_code in ((b"docs/missing", NOT_FOUND, "BackupService.6773"),
                                 (b"docs", INVALID, "BackupService.6775"),
                                 (b"../etc/passwd", INVALID, "BackupService.6772")):
        await expect_error(collect(caller.backups.GetBackupFile(bp.GetBackupFileRequest(
            backup_id=backup.backup_id, path=path))), code, cbr_code)
    await expect_error(collect(caller.backups.GetBackupImageRange(bp.GetBackupImageRangeRequest(
        backup_id=backup.backup_id))), INVALID, "BackupService.6774")
    await expect_error(collect(services.caller().backups.ListBackupTree(bp.ListBackupTreeRequest(
        backup_id=backup.backup_id))), NOT_FOUND)


async def test_selective_restore_writes_only_the_paths_asked_for(services, caller):
    fs, vault = await file_system(caller, "pick")
    readme = image_bytes(f"{fs.path}/docs/readme.txt")
    backup = await backup_now(caller, vault.vault_id)

    await expect_error(caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=backup.backup_id, paths=[b"docs/nothing-here"])), NOT_FOUND, "BackupService.6773")
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=backup.backup_id, target_path="picked", paths=[b"docs/deep", b"/hard"]))
    await wait_success(caller, reply.task_id)
    target = f"{fs.path}/picked"
    found = sorted(os.path.relpath(os.path.join(d, n), target) for d, dirs, files in os.walk(target)
                   for n in dirs + files)
    assert found == ["docs", "docs/deep", "docs/deep/er", "docs/deep/er/big.bin", "hard"]
    # The hard link's file was not asked for: it comes as a copy of that file, never a link to something else.
    assert image_bytes(f"{target}/hard") == readme and os.stat(f"{target}/hard").st_nlink == 1
    assert image_bytes(f"{target}/docs/deep/er/big.bin") == image_bytes(f"{fs.path}/docs/deep/er/big.bin")

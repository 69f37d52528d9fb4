"""`cbr backup ls | dump | mount` and `restore --path` against the real services: a file inside an ext4 file system
on a backed-up disk comes back byte-exact through the FUSE-mounted image and a loop mount; a file-system backup's
files through `dump`, its directories through `ls`; a damaged chunk makes `dump` fail with DATA_LOSS; another
project's caller finds nothing. The services share the test's event loop: everything that blocks on the mount
(which calls them) runs on a thread."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from cbr.backup.v1 import backup_pb2 as bp
from cbr_backup.chunkstore import FsChunkStore
from tests.integration.backup.test_server_backups import _server_with_data
from tests.integration.backup.test_file_system_backups import file_system
from tests.integration.cli.conftest import CONFIG_KEYS, one_error_line
from tests.support.backups import backup_now
from tests.support.calls import BACKUP, DISK, MIB, SERVER, create_disk, create_vault, ref
from tests.support.loop_mounts import require_mkfs
from tests.support.packs import chunk_objects, flip_pack_byte

MOUNT_WAIT = 30.0


def make_ext4_with_file(image: str, mount_point: Path, content: bytes) -> None:
    """An ext4 file system in the disk's image file with content at dir/file.bin, cleanly unmounted."""
    subprocess.run([*require_mkfs("ext4"), image], check=True, capture_output=True, timeout=60)
    mount_point.mkdir()
    subprocess.run(["mount", "-o", "loop", image, str(mount_point)], check=True, capture_output=True, timeout=60)
    try:
        (mount_point / "dir").mkdir()
        (mount_point / "dir" / "file.bin").write_bytes(content)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, capture_output=True, timeout=60)


def unmount(path: Path) -> None:
    """Best effort for a finally block: whatever is still mounted at path goes (lazily if busy)."""
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.asynccontextmanager
async def mounted(cbr, backup_id: str, directory: Path):
    """`cbr backup mount` running in the foreground; ends it with SIGTERM (which unmounts) and checks it exited 0."""
    directory.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_KEYS} | cbr.settings
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cbr_cli", "backup", "mount", backup_id, str(directory), env=env, cwd=cbr.cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        deadline = time.monotonic() + MOUNT_WAIT
        while not await asyncio.to_thread(os.path.ismount, directory):
            assert process.returncode is None, (await process.stderr.read()).decode()
            assert time.monotonic() < deadline, "the mount did not appear"
            await asyncio.sleep(0.1)
        yield directory
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), MOUNT_WAIT)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise
        finally:
            await asyncio.to_thread(unmount, directory)
    assert process.returncode == 0, stderr.decode()
    assert "mounted read-only" in stderr.decode()
    assert not os.path.ismount(directory)  # SIGTERM unmounted it


async def test_a_file_inside_ext4_on_a_disk_backup_through_mount_and_a_loop_mount(services, cbr, tmp_path):
    caller = services.caller(cbr.project_id)
    disk = await create_disk(caller, "ext4-disk", 64 * MIB)
    content = os.urandom(3 * MIB + 12_345)
    await asyncio.to_thread(make_ext4_with_file, disk.path, tmp_path / "source", content)
    vault = await create_vault(caller, "ext4-vault", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)

    inner = tmp_path / "inner"
    async with mounted(cbr, backup.backup_id, tmp_path / "backup") as directory:
        image = directory / "disk.img"
        assert os.listdir(directory) == ["disk.img"]
        assert os.stat(image).st_size == 64 * MIB
        assert os.stat(image).st_blocks * 512 < 64 * MIB  # holes take no room: the image shows as sparse
        inner.mkdir()
        await asyncio.to_thread(subprocess.run, ["mount", "-o", "loop,ro", str(image), str(inner)], check=True,
                                capture_output=True, timeout=60)
        try:
            assert await asyncio.to_thread((inner / "dir" / "file.bin").read_bytes) == content
        finally:
            await asyncio.to_thread(subprocess.run, ["umount", str(inner)], check=True, capture_output=True,
                                    timeout=60)
        assert not os.path.ismount(inner)

    # The whole image through dump, into a regular file: the same bytes, and holes stay holes.
    out = tmp_path / "disk.img"
    with open(out, "wb") as f:
        result = await _dump(cbr, f, backup.backup_id)
    assert result == 0
    assert out.read_bytes() == Path(disk.path).read_bytes()
    assert os.stat(out).st_blocks * 512 < 64 * MIB


async def _dump(cbr, stdout, *args: str, close: int | None = None) -> int:
    """`cbr backup dump ARGS > stdout`; close: a descriptor the child has its own copy of, closed here once it
    started (a pipe's write end, so the reader sees the end when the child exits)."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_KEYS} | cbr.settings
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "cbr_cli", "backup", "dump", *args,
                                                       env=env, cwd=cbr.cwd, stdout=stdout,
                                                       stderr=asyncio.subprocess.PIPE)
    finally:
        if close is not None:
            os.close(close)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    _dump.stderr = stderr.decode()
    return process.returncode


async def test_ls_dump_mount_and_selective_restore_of_a_file_system_backup(services, cbr, tmp_path):
    caller = services.caller(cbr.project_id)
    fs, vault = await file_system(caller, "files")
    backup = await backup_now(caller, vault.vault_id)
    big = Path(fs.path, "docs/deep/er/big.bin").read_bytes()

    listing = await cbr.json("backup", "ls", backup.backup_id)
    names = {item["name"]: item for item in listing["items"]}
    assert listing["count"] == 6 and names["docs"]["type"] == "directory"
    assert names["link-outside"]["link_target"] == "/etc/passwd"
    assert names["hard"]["hard_link_of"] == "docs/readme.txt" and names["hard"]["mode"] == "0640"
    text = (await cbr.ok("backup", "ls", backup.backup_id, "/docs/deep/er")).stdout.splitlines()
    assert len(text) == 1 and text[0].startswith("-") and text[0].endswith(" big.bin")
    assert f" {len(big)} " in text[0]

    with open(tmp_path / "big.bin", "wb") as f:
        assert await _dump(cbr, f, backup.backup_id, "/docs/deep/er/big.bin") == 0, _dump.stderr
    assert (tmp_path / "big.bin").read_bytes() == big
    reader, writer = os.pipe()  # not a regular file: the holes of sparse.img must come as zeros
    try:
        draining = asyncio.ensure_future(asyncio.to_thread(_read_all, reader))
        dumping = asyncio.ensure_future(_dump(cbr, writer, backup.backup_id, "sparse.img", close=writer))
        code, piped = await asyncio.wait_for(asyncio.gather(dumping, draining), 60)
    finally:
        os.close(reader)
    assert code == 0 and piped == Path(fs.path, "sparse.img").read_bytes()

    missing = await cbr("backup", "dump", backup.backup_id, "docs/nope")
    assert missing.code == 4 and "BackupService.6773" in one_error_line(missing)
    stranger = cbr.using(CBR_TOKEN=services.token(f"project-{uuid.uuid4().hex[:12]}"))
    refused = await stranger("backup", "ls", backup.backup_id)
    assert refused.code == 4 and "NOT_FOUND" in one_error_line(refused)

    async with mounted(cbr, backup.backup_id, tmp_path / "tree") as directory:
        read = await asyncio.to_thread((directory / "docs/deep/er/big.bin").read_bytes)
        assert read == big
        assert await asyncio.to_thread(os.readlink, directory / "link-relative") == "docs/readme.txt"
        assert sorted(await asyncio.to_thread(os.listdir, directory / "docs")) == ["deep", "readme.txt"]
        with contextlib.suppress(OSError):
            (directory / "new").write_text("no")
        assert not (directory / "new").exists()

    await cbr.ok("backup", "restore", backup.backup_id, "--target-path", "only-docs", "--path", "docs/readme.txt",
                 "--wait")
    restored = Path(fs.path, "only-docs")
    assert sorted(str(p.relative_to(restored)) for p in restored.rglob("*")) == ["docs", "docs/readme.txt"]


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while chunk := os.read(fd, 1 << 20):
        out += chunk
    return bytes(out)


async def test_dump_fails_with_data_loss_on_a_damaged_chunk(services, cbr, tmp_path):
    caller = services.caller(cbr.project_id)
    fs, vault = await file_system(caller, "damaged")
    backup = await backup_now(caller, vault.vault_id)
    store = FsChunkStore(services.infra.base / "store")
    for key in chunk_objects(store, vault.vault_id):
        flip_pack_byte(store.path_for(key), -10)  # the last chunk of each pack: big.bin's random data is one

    codes = []
    for path in ("docs/deep/er/big.bin", "docs/readme.txt", "sparse.img"):
        with open(tmp_path / "out", "wb") as f:
            codes.append(await _dump(cbr, f, backup.backup_id, path))
            if codes[-1]:
                assert "DATA_LOSS" in _dump.stderr and "corrupt" in _dump.stderr
    assert 10 in codes  # DATA_LOSS's exit code, for the file whose chunk was damaged


async def test_a_server_backup_mounts_as_one_image_per_disk(services, cbr, tmp_path):
    caller = services.caller(cbr.project_id)
    server, paths = await _server_with_data(caller, "srv")
    vault = await create_vault(caller, "srv-vault", SERVER, BACKUP, resources=[ref(server)])
    backup = await backup_now(caller, vault.vault_id)
    devices = {}
    for child in backup.children:
        full = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=child.backup_id))).backup
        devices[f"{full.device or full.backup_id}.img"] = next(
            p for d, p in zip(server.disks, paths) if d.disk_id == full.resource_id)
    async with mounted(cbr, backup.backup_id, tmp_path / "srv") as directory:
        assert sorted(os.listdir(directory)) == sorted(devices)
        for name, disk in devices.items():
            assert await asyncio.to_thread((directory / name).read_bytes) == Path(disk).read_bytes()

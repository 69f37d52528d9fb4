"""`make demo`: on the embedded stack, back a disk up twice, restore it two ways and check every byte."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import grpc
from rich.console import Console
from rich.text import Text

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.backup.v1 import task_pb2 as tp
from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_cli.arguments import size
from cbr_cli.client import CbrClient
from cbr_cli.config import load_config
from cbr_cli.main import describe
from cbr_cli.output import bytes_text, make_console, new_table
from cbr_cli.progress import WatchEndedError, watch_tasks
from cbr_devstack.stack import RunDir, command_hint, up

MIB = 1024 * 1024
REGION = MIB                       # the disk is filled one region at a time
KINDS = ("text-like", "random", "repeated", "hole")
KIND_WEIGHTS = (35, 15, 10, 40)    # a repeated region is one written before, so the chunk store can deduplicate it
CHANGED_FRACTION = 0.015           # of the disk, rewritten before the incremental backup
CHANGE_PIECE = 256 * 1024
TEXT_POOL_LINES = 65536
USAGE_WAIT_SECONDS = 15.0          # the vault learns its usage from an event; give it this long
WORDS = ("backup restore vault chunk disk server policy region replica snapshot manifest index journal "
         "tenant volume bucket checksum window retention schedule project the and of to in is for on with "
         "at by from as that this it be are was data block write read sector extent hole zero").split()


class DemoError(Exception):
    """A step did not do what it should; the message says which and why."""


@dataclass
class Step:
    name: str
    seconds: float
    logical: int                 # the logical bytes of the backup made or restored
    checksum: str                # what the image's checksum was, or how the restored one compared
    stored: int = 0              # backups: stored (compressed, deduplicated) bytes
    grew: int | None = None      # backups: how much the vault's used_bytes grew; None if that was not seen
    matches: bool | None = None  # restores: whether the image came back as it was; None for a backup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbr_devstack.demo", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="the embedded stack's folder; started there unless it runs (default: ./.run)")
    parser.add_argument("--size", type=size, default=256 * MIB, help="the demo disk's size (default 256M)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the disk's contents (default 1)")
    args = parser.parse_args(argv)
    if args.size < 16 * MIB or args.size % MIB:
        parser.error("--size must be a whole number of MiB, at least 16M")

    if up(args.run_dir) != 0:
        return 1
    console = make_console()
    # This stack's, whatever is exported or a profile of ~/.config/cbr/config says.
    config = load_config({"CBR_CONFIG_FILE": os.devnull}, str(RunDir(args.run_dir.absolute()).env_file))
    try:
        steps = asyncio.run(run_demo(config, args.size, args.seed, console))
        code = print_summary(console, steps)
    except grpc.aio.AioRpcError as error:
        console.print(Text(f"demo failed: {describe(error)}", style="bold red"))
        code = 1
    except (DemoError, WatchEndedError) as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        code = 1
    except KeyboardInterrupt:
        console.print("interrupted")
        code = 130
    console.print(f"CBR keeps running. Stop it with: {command_hint('down', args.run_dir)}")
    return code


async def run_demo(config, size_bytes: int, seed: int, console: Console) -> list[Step]:
    tag = time.strftime("%H%M%S-") + secrets.token_hex(2)  # names differ from run to run
    contents = SeededContents(seed)
    async with CbrClient(config) as client:
        disk = (await client.protectables.CreateDisk(pp.CreateDiskRequest(
            name=f"demo-{tag}", size_bytes=size_bytes))).disk
        console.print(f"Disk {disk.name} ({bytes_text(size_bytes)}): {disk.path}")
        written = fill_disk(disk.path, contents)
        console.print("  wrote " + ", ".join(f"{bytes_text(n)} {kind}" for kind, n in written.items())
                      + " (holes stay sparse)")
        vault = (await client.vaults.CreateVault(vp.CreateVaultRequest(
            name=f"demo-vault-{tag}", object_type=cp.OBJECT_TYPE_DISK, protect_type=vp.PROTECT_TYPE_BACKUP,
            size_gb=max(1, 4 * size_bytes // 1024**3),
            resources=[vp.ResourceRef(resource_id=disk.resource_id, type=cp.OBJECT_TYPE_DISK)]))).vault
        console.print(f"Vault {vault.name} holds it")

        full_sum = sha256_file(disk.path)
        full, full_step = await back_up(client, console, vault.vault_id, f"demo-full-{tag}", "full backup", full_sum)

        changed = change_disk(disk.path, contents)
        console.print(f"Changed {bytes_text(changed)} of the disk ({changed / size_bytes:.1%})")
        incr_sum = sha256_file(disk.path)
        incr, incr_step = await back_up(client, console, vault.vault_id, f"demo-incr-{tag}", "incremental backup",
                                        incr_sum)

        new_disk = await restore_to_new_disk(client, console, incr, f"demo-restored-{tag}", incr_sum,
                                             "incremental → new disk")
        in_place = await restore_in_place(client, console, full, disk.path, full_sum, "full → source disk, in place")
    return [full_step, incr_step, new_disk, in_place]


async def back_up(client: CbrClient, console: Console, vault_id: str, name: str, label: str,
                  image_sum: str) -> tuple[bp.Backup, Step]:
    used_before = await vault_used(client, vault_id)
    started = time.monotonic()
    checkpoint = (await client.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=vault_id, name=name))).checkpoint
    if not checkpoint.resources or not checkpoint.resources[0].task_id:
        raise DemoError(f"checkpoint {checkpoint.checkpoint_id} started no backup: {checkpoint.skipped_resources}")
    await follow(client, console, checkpoint.resources[0].task_id)
    seconds = time.monotonic() - started
    backup = (await client.backups.GetBackup(bp.GetBackupRequest(backup_id=checkpoint.resources[0].backup_id))).backup
    used_after = await vault_used_changed(client, vault_id, used_before)
    grew = None if used_after is None else used_after - used_before
    return backup, Step(label, seconds, backup.logical_bytes, f"recorded {image_sum[:12]}…",
                        stored=backup.stored_bytes, grew=grew)


async def follow(client: CbrClient, console: Console, task_id: str) -> tp.Task:
    """A progress bar fed by WatchTask until the task ends; raises unless it succeeded."""
    [task] = await watch_tasks(client.tasks, [task_id], console, appear_within=client.timeout)
    if task.status != tp.TASK_STATUS_SUCCESS:
        raise DemoError(f"task {task_id} ended {tp.TaskStatus.Name(task.status)}: "
                        f"{task.error.code} {task.error.message}".rstrip())
    return task


async def restore_to_new_disk(client: CbrClient, console: Console, backup: bp.Backup, name: str, expected: str,
                              label: str) -> Step:
    started = time.monotonic()
    reply = await client.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
        backup_id=backup.backup_id, name=name))
    await follow(client, console, reply.task_id)
    disk = (await client.protectables.GetProtectable(pp.GetProtectableRequest(
        type=cp.OBJECT_TYPE_DISK, resource_id=reply.disk_id))).protectable
    return compared(label, started, backup, sha256_file(disk.path), expected)


async def restore_in_place(client: CbrClient, console: Console, backup: bp.Backup, path: str, expected: str,
                           label: str) -> Step:
    started = time.monotonic()
    reply = await client.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id))
    await follow(client, console, reply.task_id)
    return compared(label, started, backup, sha256_file(path), expected)


def compared(label: str, started: float, backup: bp.Backup, actual: str, expected: str) -> Step:
    """A restore's step: did the image come back with the checksum it had when `backup` was taken?"""
    verdict = f"{'matches' if actual == expected else 'DIFFERS from'} {expected[:12]}…"
    return Step(label, time.monotonic() - started, backup.logical_bytes, verdict, matches=actual == expected)


async def vault_used(client: CbrClient, vault_id: str) -> int:
    return (await client.vaults.GetVault(vp.GetVaultRequest(vault_id=vault_id))).vault.used_bytes


async def vault_used_changed(client: CbrClient, vault_id: str, before: int) -> int | None:
    """The vault's used_bytes once it differs from `before`; None if it has not changed in time."""
    deadline = time.monotonic() + USAGE_WAIT_SECONDS
    while (used := await vault_used(client, vault_id)) == before:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)
    return used


class SeededContents:
    """Reproducible disk contents: text-like lines (compressing about 3.5x, as logs do) or random bytes."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        # Regions draw lines from this pool: as compressible as line-by-line text, ten times faster to make.
        self.lines = [f"{self.rng.randrange(10**6):06d} {' '.join(self.rng.choices(WORDS, k=10))}\n"
                      for _ in range(TEXT_POOL_LINES)]

    def data(self, kind: str, length: int) -> bytes:
        if kind == "random":
            return self.rng.randbytes(length)
        return "".join(self.rng.choices(self.lines, k=length // 40)).encode()[:length]  # lines are 60+ bytes


def fill_disk(path: str, contents: SeededContents) -> dict[str, int]:
    """Text-like, random and repeated regions with holes between; returns the bytes written of each kind."""
    written = dict.fromkeys(KINDS[:-1], 0)
    recent: list[bytes] = []  # what a repeated region repeats
    with locked_for_writing(path) as f:
        for offset in range(0, os.path.getsize(path), REGION):
            kind = contents.rng.choices(KINDS, KIND_WEIGHTS)[0]
            if kind == "hole" or (kind == "repeated" and not recent):
                continue
            data = contents.rng.choice(recent) if kind == "repeated" else contents.data(kind, REGION)
            recent = [*recent[-15:], data]
            f.seek(offset)
            f.write(data)
            written[kind] += len(data)
    return written


def change_disk(path: str, contents: SeededContents) -> int:
    """Rewrites CHANGED_FRACTION of the disk in pieces at random places, holes included."""
    size_bytes = os.path.getsize(path)
    pieces = max(1, round(size_bytes * CHANGED_FRACTION / CHANGE_PIECE))
    with locked_for_writing(path) as f:
        for _ in range(pieces):
            f.seek(contents.rng.randrange(size_bytes - CHANGE_PIECE) // 4096 * 4096)
            f.write(contents.data(contents.rng.choice(KINDS[:2]), CHANGE_PIECE))
    return pieces * CHANGE_PIECE


@contextlib.contextmanager
def locked_for_writing(path: str) -> Iterator[BinaryIO]:
    """The disk's file under a shared lock, as a hypervisor writes it (a snapshot takes the lock exclusively, so
    it sees one instant); flushed to disk before the lock goes."""
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        yield f
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def print_summary(console: Console, steps: list[Step]) -> int:
    """The table of steps; 0 if every restored image matched its checksum, else 1."""
    table = new_table("Summary")
    for header in ("STEP", "TIME", "LOGICAL", "STORED", "VAULT GREW BY", "RATIO", "SHA-256 OF THE IMAGE"):
        table.add_column(header, justify="left" if header.startswith(("STEP", "SHA")) else "right")
    for step in steps:
        table.add_row(step.name, f"{step.seconds:.1f} s", bytes_text(step.logical), *summary_cells(step))
    console.print(table)
    backups = [step for step in steps if step.matches is None]
    if all(step.grew for step in backups):
        logical, grew = sum(step.logical for step in backups), sum(step.grew for step in backups)
        console.print(f"{len(backups)} backups: {bytes_text(logical)} of images in {bytes_text(grew)} of vault "
                      f"({logical / grew:.1f}x)")
    console.print(Text("RATIO = logical bytes per byte the vault grew by: deduplication and compression together; "
                       "logical bytes are the image's data, holes and zero blocks left out", style="dim"))
    restores = [step for step in steps if step.matches is not None]
    if all(step.matches for step in restores):
        console.print(Text(f"{len(restores)} of {len(restores)} restored images match the checksums taken at "
                           "backup time.", style="bold green"))
        return 0
    console.print(Text("CHECKSUM MISMATCH: a restored image differs from its backup.", style="bold red"))
    return 1


def summary_cells(step: Step) -> tuple[str, str, str, Text]:
    """STORED, VAULT GREW BY, RATIO and the checksum: a backup's sizes, or a restore's verdict."""
    if step.matches is not None:
        return "-", "-", "-", Text(step.checksum, style="green" if step.matches else "bold red")
    if step.grew is None:
        return bytes_text(step.stored), f"not seen in {USAGE_WAIT_SECONDS:.0f} s", "-", Text(step.checksum)
    return bytes_text(step.stored), bytes_text(step.grew), f"{step.logical / step.grew:.1f}x", Text(step.checksum)


if __name__ == "__main__":
    sys.exit(main())

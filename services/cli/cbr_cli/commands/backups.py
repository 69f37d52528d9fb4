"""`cbr backup ...`: BackupService: back up a vault now, the backups that makes, restore, disks from backups,
verify and garbage collection."""
from __future__ import annotations

import argparse
import asyncio
import os
import uuid

import grpc

from cbr.backup.v1 import backup_pb2
from cbr.common.v1 import common_pb2
from cbr.vault.v1 import vault_pb2
from cbr_cli import exit_codes
from cbr_cli.arguments import BACKUP_ID, CHECKPOINT_ID, DISK_ID, FILE_SYSTEM_ID, RESOURCE_ID, SERVER_ID, SIZE_HELP, \
    VAULT_ID, UsageError, add_command, add_enum, add_group, add_hidden, add_paging, add_wait, \
    backup_to_disk, count, page, server_disks, size, timestamp
from cbr_cli.client import CbrClient
from cbr_cli.commands.tasks import report_unsuccessful, wait_for, watch_until_done
from cbr_cli.errors import LIST_FILTERS
from cbr_cli.output import Column, Output, bytes_text, enum_of, message_dict, time_text
from cbr_cli.resolve import names_of, short_id

async def backup_columns(client: CbrClient, out: Output, backups) -> list[Column]:
    """The backup table: the vault's and resource's names, not their ids (looked up only for a table)."""
    vaults = {} if out.as_json or out.quiet else await names_of(client, "vault", (b.vault_id for b in backups))
    return [
        Column("ID", lambda b: b.backup_id, is_id=True),
        Column("NAME", lambda b: b.name, is_name=True),
        Column("VAULT", lambda b: vaults.get(b.vault_id) or short_id(b.vault_id), is_name=True),
        Column("RESOURCE", lambda b: b.resource_name or short_id(b.resource_id), is_name=True),
        Column("TYPE", lambda b: enum_of(b, "resource_type")),
        Column("STATUS", lambda b: enum_of(b, "status") + (" (corrupt)" if b.corrupt else "")),
        Column("SIZE", lambda b: bytes_text(b.logical_bytes)),
        Column("STORED", lambda b: bytes_text(b.stored_bytes)),  # the chunks it references, shared ones included
        Column("ADDED", lambda b: bytes_text(b.added_bytes)),    # what it added to the vault: an incremental's changes
        Column("INCR", lambda b: "yes" if b.incremental else "no"),
        Column("CREATED", lambda b: time_text(b.created_time, minutes=True)),
    ]


# A checkpoint's `incremental` is what was asked for; each backup says what it was (`cbr backup show`).
CHECKPOINT_HIDDEN = ("incremental",)


def register(groups, common) -> None:
    commands = add_group(groups, "backup", "back up now, list, show, restore, delete backups; verify, collect garbage")

    parser = add_command(commands, "create", create_backups, common,
                         "back up a vault's resources now (all, or those named): one backup each, one checkpoint "
                         "for them all; exit 12 if a resource was skipped", aliases=("checkpoint",))
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("resource_ids", nargs="*", type=RESOURCE_ID, metavar="RESOURCE_ID",
                        help="a subset (default: every resource)")
    parser.add_argument("--full", action="store_true",
                        help="read every resource whole instead of only what changed (chunks still deduplicate)")
    parser.add_argument("--name", default="", help="1..64 characters (default: manualbk_xxxx)")
    parser.add_argument("--description", default="")
    parser.add_argument("--exclude", type=server_disks, action="append", default=[],
                        metavar="SERVER_ID=DISK_ID[,DISK_ID]", help="server resources: disks to leave out this time")
    parser.add_argument("--request-id", default="", metavar="ID",
                        help="idempotency key (0-64 letters, digits, '_', '-'): the same one answers the first "
                             "call's checkpoint (default: a new one per run, so a retry on another replica of the "
                             "service never backs up twice)")
    parser.add_argument("--wait", action="store_true",
                        help="watch the backups with progress bars until they end, then list them; exit 11 unless "
                             "every one succeeds")

    parser = add_command(commands, "show-checkpoint", show_checkpoint, common,
                         "show a checkpoint: the backups and tasks it started, and what it skipped",
                         aliases=("get-checkpoint",))
    parser.add_argument("checkpoint_id", type=CHECKPOINT_ID, metavar="CHECKPOINT_ID")

    parser = add_command(commands, "list", list_backups, common, "list backups, newest first",
                         fields=LIST_FILTERS)
    parser.add_argument("--vault", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--resource", type=RESOURCE_ID, metavar="RESOURCE_ID")
    add_enum(parser, "--type", common_pb2.ObjectType, dest="resource_type", help="the resource type")
    add_enum(parser, "--status", backup_pb2.BackupStatus, action="append", help="(repeatable: any of them)")
    add_enum(parser, "--image-type", backup_pb2.ImageType, help="taken here, or a replica")
    parser.add_argument("--since", type=timestamp, metavar="TIME",
                        help="created at or after (ISO 8601; local time if no offset)")
    parser.add_argument("--until", type=timestamp, metavar="TIME", help="created before (ISO 8601)")
    parser.add_argument("--name", default="", help="name contains this")
    parser.add_argument("--checkpoint", type=CHECKPOINT_ID, metavar="CHECKPOINT_ID")
    parser.add_argument("--parent", type=BACKUP_ID, metavar="BACKUP_ID",
                        help="the per-disk backups of a server backup")
    parser.add_argument("--sort", default="", metavar="KEY[:asc|desc],...",
                        help="keys created_time, updated_time, name, status, protected_time, backup_id "
                             "(default created_time:desc)")
    add_paging(parser)

    parser = add_command(commands, "show", show_backup, common,
                         "show one backup: sizes (stored: what it references; added: what it added to the vault), "
                         "corrupt, verified_time, device, children", aliases=("get",))
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")

    parser = add_command(commands, "update", update_backup, common, "rename or describe a backup")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("--name")
    parser.add_argument("--description")

    parser = add_command(commands, "delete", delete_backup, common,
                         "delete a backup (runs as a delete task; the others stay restorable)")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    add_wait(parser)

    parser = add_command(commands, "restore", restore_backup, common,
                         "restore in place: a disk, a server disk by disk, or a file system")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("--disk", type=DISK_ID, metavar="DISK_ID",
                        help="disk backups: the disk to overwrite (default: the source disk)")
    add_hidden(parser, "--volume", dest="disk", type=DISK_ID)
    parser.add_argument("--server", type=SERVER_ID, metavar="SERVER_ID",
                        help="server backups: the server to restore (default: the source server)")
    parser.add_argument("--map", type=backup_to_disk, action="append", default=[], metavar="CHILD_BACKUP_ID=DISK_ID",
                        help="server backups, required: which per-disk backup goes to which disk (repeatable)")
    parser.add_argument("--power-on", action=argparse.BooleanOptionalAction, default=None,
                        help="server backups: start the server afterwards (default: on)")
    parser.add_argument("--file-system", type=FILE_SYSTEM_ID, metavar="FILE_SYSTEM_ID",
                        help="file system backups: the file system to restore into (default: the source)")
    add_hidden(parser, "--fs", dest="file_system", type=FILE_SYSTEM_ID)
    parser.add_argument("--target-path", default="", metavar="PATH",
                        help="file system backups: where in it, relative to its root (default: the root)")
    parser.add_argument("--new-directory", action="store_true",
                        help="file system backups: restore into a new directory instead of overwriting")
    parser.add_argument("--path", dest="paths", action="append", default=[], metavar="PATH",
                        help="file system backups: only this path (a directory with all below it) and the "
                             "directories above it (repeatable)")
    parser.add_argument("--force", action="store_true",
                        help="disk and server backups: overwrite disks even while a running client holds them")
    add_wait(parser)

    parser = add_command(commands, "create-disk", create_disk_from_backup, common,
                         "restore a disk backup (or one disk of a server backup) to a new disk")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("--name", default="", help="the new disk's name (1-64 letters, digits, '_', '-', '.'; "
                                                   "default: restore-<first 8 characters of the backup id>)")
    parser.add_argument("--size", type=size, default=0, help=f"at least the source's (default: the source's); "
                                                             f"{SIZE_HELP}")
    add_wait(parser)

    parser = add_command(commands, "verify", verify_backups, common,
                         "re-read and re-hash the chunks a vault's backups need; a backup with a missing or damaged "
                         "chunk is marked corrupt")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--backup-id", dest="backup_ids", type=BACKUP_ID, action="append", default=[],
                        metavar="BACKUP_ID", help="only this backup of the vault (repeatable; default: every "
                                                  "available backup)")
    add_wait(parser)

    parser = add_command(commands, "gc", collect_garbage, common,
                         "delete the vault's chunks that no backup references any more")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--grace-seconds", type=count, metavar="N",
                        help="keep chunks unreferenced for less than this (default: the service's, 86400); "
                             "0 is safe: running backups keep theirs")
    add_wait(parser)


async def create_backups(args, client: CbrClient, out: Output) -> int:
    """CreateCheckpoint; with --wait, the backups it made once they end, as they say they are (incremental or not,
    sizes). A resource skipped (busy, gone) makes the exit code 12: the backup asked for did not happen."""
    resource_ids = args.resource_ids
    if args.exclude and not resource_ids:
        # The service reads resources named only in resource_details as the ones to back up; "default: every
        # resource" must hold with --exclude too, so name them all.
        vault = (await client.vaults.GetVault(vault_pb2.GetVaultRequest(vault_id=args.vault_id))).vault
        resource_ids = [resource.resource_id for resource in vault.resources]
    request = backup_pb2.CreateCheckpointRequest(
        vault_id=args.vault_id, resource_ids=resource_ids, name=args.name, description=args.description,
        resource_details=[backup_pb2.ResourceDetail(resource_id=server_id, type=common_pb2.OBJECT_TYPE_SERVER,
                                                    exclude_volumes=disks) for server_id, disks in args.exclude],
        request_id=args.request_id or uuid.uuid4().hex)
    if args.full:
        request.incremental = False
    checkpoint = (await client.backups.CreateCheckpoint(request)).checkpoint
    if not args.wait:
        if out.quiet:  # the backups it started, the ids a script goes on with
            out.ids(r.backup_id for r in checkpoint.resources)
        else:
            out.one(checkpoint, hide=CHECKPOINT_HIDDEN)
        return report_skipped(out, checkpoint)
    started = [r for r in checkpoint.resources if r.task_id]
    finals = await watch_until_done(client, out, [r.task_id for r in started]) if started else []
    backups = [b for b in await asyncio.gather(*(_backup_or_none(client, r.backup_id) for r in started)) if b]
    out.many(backups, await backup_columns(client, out, backups))
    failed = report_unsuccessful(out, finals)
    skipped = report_skipped(out, checkpoint)
    return exit_codes.TASK_UNSUCCESSFUL if failed else skipped


async def _backup_or_none(client: CbrClient, backup_id: str) -> backup_pb2.Backup | None:
    """The backup as it is now; None if it is gone (a failed or cancelled one may be: its task tells why)."""
    try:
        return (await client.backups.GetBackup(backup_pb2.GetBackupRequest(backup_id=backup_id))).backup
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def report_skipped(out: Output, checkpoint: backup_pb2.Checkpoint) -> int:
    """A line per resource the checkpoint skipped and why, then one error line; the exit code that says it."""
    if not checkpoint.skipped_resources:
        return exit_codes.OK
    for skipped in checkpoint.skipped_resources:
        name = f"{skipped.name} ({skipped.resource_id})" if skipped.name else skipped.resource_id
        out.note(f"skipped {enum_of(skipped, 'type')} {name}: {skipped.reason} [{skipped.code}]")
    left_out, started = len(checkpoint.skipped_resources), len(checkpoint.resources)
    details = {"checkpoint_id": checkpoint.checkpoint_id,
               "skipped": [message_dict(skipped) for skipped in checkpoint.skipped_resources]}
    if started:
        out.error(f"{left_out} of {left_out + started} resources skipped (see above); "
                  f"{started} backed up by checkpoint {checkpoint.checkpoint_id}", "SKIPPED", exit_codes.SKIPPED,
                  details)
    else:
        out.error(f"nothing backed up: every resource was skipped ({left_out}, see above)", "SKIPPED",
                  exit_codes.SKIPPED, details)
    return exit_codes.SKIPPED


async def show_checkpoint(args, client: CbrClient, out: Output) -> None:
    reply = await client.backups.GetCheckpoint(backup_pb2.GetCheckpointRequest(checkpoint_id=args.checkpoint_id))
    out.one(reply.checkpoint, hide=CHECKPOINT_HIDDEN)


async def list_backups(args, client: CbrClient, out: Output) -> None:
    reply = await client.backups.ListBackups(backup_pb2.ListBackupsRequest(
        page=page(args), vault_id=args.vault, resource_id=args.resource, resource_type=args.resource_type,
        status=args.status, image_type=args.image_type, start_time=args.since, end_time=args.until,
        name=args.name, checkpoint_id=args.checkpoint, parent_id=args.parent, sort=args.sort))
    out.many(reply.backups, await backup_columns(client, out, reply.backups), reply.count)


async def show_backup(args, client: CbrClient, out: Output) -> None:
    out.one((await client.backups.GetBackup(backup_pb2.GetBackupRequest(backup_id=args.backup_id))).backup)


async def update_backup(args, client: CbrClient, out: Output) -> None:
    changes = {name: getattr(args, name) for name in ("name", "description") if getattr(args, name) is not None}
    if not changes:
        raise UsageError("nothing to change: give --name or --description")
    reply = await client.backups.UpdateBackup(backup_pb2.UpdateBackupRequest(backup_id=args.backup_id, **changes))
    out.one(reply.backup)


async def delete_backup(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.backups.DeleteBackup(backup_pb2.DeleteBackupRequest(backup_id=args.backup_id))
    if args.wait:
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"deleting backup {args.backup_id}: task {reply.task_id}")
    return None


async def restore_backup(args, client: CbrClient, out: Output) -> int | None:
    request = backup_pb2.RestoreBackupRequest(
        backup_id=args.backup_id, volume_id=args.disk, server_id=args.server,
        mappings=[backup_pb2.RestoreMapping(backup_id=child, volume_id=disk) for child, disk in args.map],
        file_system_id=args.file_system, target_path=args.target_path, new_directory=args.new_directory,
        force=args.force, paths=[os.fsencode(path) for path in args.paths])
    if args.power_on is not None:
        request.power_on = args.power_on
    reply = await client.backups.RestoreBackup(request)
    if args.wait:
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"restoring backup {args.backup_id}: task {reply.task_id}")
    return None


async def create_disk_from_backup(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.backups.CreateDiskFromBackup(backup_pb2.CreateDiskFromBackupRequest(
        backup_id=args.backup_id, name=args.name, size_bytes=args.size))
    if args.wait:
        out.note(f"disk {reply.disk_id}")
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"disk {reply.disk_id} created; its data arrives as task {reply.task_id} runs")
    return None


async def verify_backups(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.backups.VerifyBackups(backup_pb2.VerifyBackupsRequest(
        vault_id=args.vault_id, backup_ids=args.backup_ids))
    if args.wait:
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"verifying vault {args.vault_id}: task {reply.task_id}")
    return None


async def collect_garbage(args, client: CbrClient, out: Output) -> int | None:
    request = backup_pb2.CollectGarbageRequest(vault_id=args.vault_id)
    if args.grace_seconds is not None:
        request.grace_seconds = args.grace_seconds
    reply = await client.backups.CollectGarbage(request)
    if args.wait:
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"collecting garbage in vault {args.vault_id}: task {reply.task_id}")
    return None

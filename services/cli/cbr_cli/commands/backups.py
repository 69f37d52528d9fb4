"""`cbr backup ...`: BackupService, checkpoints and the backups they make, restore and disks from backups."""
from __future__ import annotations

import argparse

from cbr.backup.v1 import backup_pb2
from cbr.common.v1 import common_pb2
from cbr_cli.arguments import SIZE_HELP, UsageError, add_command, add_enum, add_group, add_paging, add_wait, \
    count, id_pair, id_with_list, page, size, timestamp
from cbr_cli.client import CbrClient
from cbr_cli.commands.tasks import wait_for
from cbr_cli.output import Column, Output, bytes_text, enum_of, time_text

BACKUP_COLUMNS = (
    Column("ID", lambda b: b.backup_id, is_id=True),
    Column("NAME", lambda b: b.name),
    Column("RESOURCE", lambda b: b.resource_name or b.resource_id),
    Column("TYPE", lambda b: enum_of(b, "resource_type")),
    Column("STATUS", lambda b: enum_of(b, "status") + (" (corrupt)" if b.corrupt else "")),
    Column("SIZE", lambda b: bytes_text(b.logical_bytes)),
    Column("STORED", lambda b: bytes_text(b.stored_bytes)),
    Column("INCREMENTAL", lambda b: "yes" if b.incremental else "no"),
    Column("CREATED", lambda b: time_text(b.created_time)),
)


def register(groups, common) -> None:
    commands = add_group(groups, "backup", "checkpoints and backups: back up now, list, restore, delete, verify, "
                                           "collect garbage")

    parser = add_command(commands, "checkpoint", create_checkpoint, common,
                         "back up a vault's resources now (all, or those named)")
    parser.add_argument("vault_id")
    parser.add_argument("resource_ids", nargs="*", metavar="RESOURCE_ID", help="a subset (default: every resource)")
    parser.add_argument("--full", action="store_true",
                        help="read every resource whole instead of only what changed (chunks still deduplicate)")
    parser.add_argument("--name", default="", help="1..64 characters (default: manualbk_xxxx)")
    parser.add_argument("--description", default="")
    parser.add_argument("--exclude", type=id_with_list, action="append", default=[],
                        metavar="SERVER_ID=DISK_ID[,DISK_ID]", help="server resources: disks to leave out this time")
    add_wait(parser)

    parser = add_command(commands, "get-checkpoint", get_checkpoint, common,
                         "show a checkpoint, its backups and tasks, and what it skipped")
    parser.add_argument("checkpoint_id")

    parser = add_command(commands, "list", list_backups, common, "list backups, newest first")
    parser.add_argument("--vault", default="", metavar="VAULT_ID")
    parser.add_argument("--resource", default="", metavar="RESOURCE_ID")
    add_enum(parser, "--type", common_pb2.ObjectType, dest="resource_type", help="the resource type")
    add_enum(parser, "--status", backup_pb2.BackupStatus, action="append", help="(repeatable: any of them)")
    add_enum(parser, "--image-type", backup_pb2.ImageType, help="taken here, or a replica")
    parser.add_argument("--since", type=timestamp, metavar="TIME",
                        help="created at or after (ISO 8601; local time if no offset)")
    parser.add_argument("--until", type=timestamp, metavar="TIME", help="created before (ISO 8601)")
    parser.add_argument("--name", default="", help="name contains this")
    parser.add_argument("--checkpoint", default="", metavar="CHECKPOINT_ID")
    parser.add_argument("--parent", default="", metavar="BACKUP_ID", help="the per-disk backups of a server backup")
    parser.add_argument("--sort", default="", metavar="KEY[:asc|desc],...",
                        help="keys created_time, updated_time, name, status, protected_time, backup_id "
                             "(default created_time:desc)")
    add_paging(parser)

    parser = add_command(commands, "get", get_backup, common, "show one backup")
    parser.add_argument("backup_id")

    parser = add_command(commands, "update", update_backup, common, "rename or describe a backup")
    parser.add_argument("backup_id")
    parser.add_argument("--name")
    parser.add_argument("--description")

    parser = add_command(commands, "delete", delete_backup, common,
                         "delete a backup (runs as a delete task; the others stay restorable)")
    parser.add_argument("backup_id")
    add_wait(parser)

    parser = add_command(commands, "restore", restore_backup, common,
                         "restore in place: a disk, a server disk by disk, or a file system")
    parser.add_argument("backup_id")
    parser.add_argument("--volume", default="", metavar="DISK_ID", help="disk backups: the disk to overwrite "
                        "(default: the source disk)")
    parser.add_argument("--server", default="", metavar="SERVER_ID",
                        help="server backups: the server to restore (default: the source server)")
    parser.add_argument("--map", type=id_pair, action="append", default=[], metavar="CHILD_BACKUP_ID=DISK_ID",
                        help="server backups, required: which per-disk backup goes to which disk (repeatable)")
    parser.add_argument("--power-on", action=argparse.BooleanOptionalAction, default=None,
                        help="server backups: start the server afterwards (default: on)")
    parser.add_argument("--fs", default="", metavar="FILE_SYSTEM_ID",
                        help="file system backups: the file system to restore into (default: the source)")
    parser.add_argument("--target-path", default="", metavar="PATH",
                        help="file system backups: where in it, relative to its root (default: the root)")
    parser.add_argument("--new-directory", action="store_true",
                        help="file system backups: restore into a new directory instead of overwriting")
    add_wait(parser)

    parser = add_command(commands, "create-disk", create_disk_from_backup, common,
                         "restore a disk backup (or one disk of a server backup) to a new disk")
    parser.add_argument("backup_id")
    parser.add_argument("--name", default="", help="the new disk's name (1-64 letters, digits, '_', '-', '.'; "
                                                   "default: restore-<first 8 characters of the backup id>)")
    parser.add_argument("--size", type=size, default=0, help=f"at least the source's (default: the source's); "
                                                             f"{SIZE_HELP}")
    add_wait(parser)

    parser = add_command(commands, "verify", verify_backups, common,
                         "re-read and re-hash the chunks a vault's backups need; a backup with a missing or damaged "
                         "chunk is marked corrupt")
    parser.add_argument("vault_id")
    parser.add_argument("--backup-id", dest="backup_ids", action="append", default=[], metavar="BACKUP_ID",
                        help="only this backup of the vault (repeatable; default: every available backup)")
    add_wait(parser)

    parser = add_command(commands, "gc", collect_garbage, common,
                         "delete the vault's chunks that no backup references any more")
    parser.add_argument("vault_id")
    parser.add_argument("--grace-seconds", type=count, metavar="N",
                        help="keep chunks unreferenced for less than this (default: the service's, 86400); "
                             "0 is safe: running backups keep theirs")
    add_wait(parser)


async def create_checkpoint(args, client: CbrClient, out: Output) -> int | None:
    request = backup_pb2.CreateCheckpointRequest(
        vault_id=args.vault_id, resource_ids=args.resource_ids, name=args.name, description=args.description,
        resource_details=[backup_pb2.ResourceDetail(resource_id=server_id, type=common_pb2.OBJECT_TYPE_SERVER,
                                                    exclude_volumes=disks) for server_id, disks in args.exclude])
    if args.full:
        request.incremental = False
    checkpoint = (await client.backups.CreateCheckpoint(request)).checkpoint
    if not args.wait:
        out.one(checkpoint)
        return None
    for skipped in checkpoint.skipped_resources:
        out.note(f"skipped {skipped.name or skipped.resource_id} ({skipped.code}): {skipped.reason}")
    task_ids = [r.task_id for r in checkpoint.resources if r.task_id]
    if not task_ids:
        out.one(checkpoint)
        return None
    return await wait_for(client, out, task_ids)


async def get_checkpoint(args, client: CbrClient, out: Output) -> None:
    reply = await client.backups.GetCheckpoint(backup_pb2.GetCheckpointRequest(checkpoint_id=args.checkpoint_id))
    out.one(reply.checkpoint)


async def list_backups(args, client: CbrClient, out: Output) -> None:
    reply = await client.backups.ListBackups(backup_pb2.ListBackupsRequest(
        page=page(args), vault_id=args.vault, resource_id=args.resource, resource_type=args.resource_type,
        status=args.status, image_type=args.image_type, start_time=args.since, end_time=args.until,
        name=args.name, checkpoint_id=args.checkpoint, parent_id=args.parent, sort=args.sort))
    out.many(reply, reply.backups, BACKUP_COLUMNS, reply.count)


async def get_backup(args, client: CbrClient, out: Output) -> None:
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
        return await wait_for(client, out, [reply.task_id])
    out.done(reply, f"deleting backup {args.backup_id}: task {reply.task_id}")
    return None


async def restore_backup(args, client: CbrClient, out: Output) -> int | None:
    request = backup_pb2.RestoreBackupRequest(
        backup_id=args.backup_id, volume_id=args.volume, server_id=args.server,
        mappings=[backup_pb2.RestoreMapping(backup_id=child, volume_id=disk) for child, disk in args.map],
        file_system_id=args.fs, target_path=args.target_path, new_directory=args.new_directory)
    if args.power_on is not None:
        request.power_on = args.power_on
    reply = await client.backups.RestoreBackup(request)
    if args.wait:
        return await wait_for(client, out, [reply.task_id])
    out.done(reply, f"restoring backup {args.backup_id}: task {reply.task_id}")
    return None


async def create_disk_from_backup(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.backups.CreateDiskFromBackup(backup_pb2.CreateDiskFromBackupRequest(
        backup_id=args.backup_id, name=args.name, size_bytes=args.size))
    if args.wait:
        out.note(f"disk {reply.disk_id}")
        return await wait_for(client, out, [reply.task_id])
    out.done(reply, f"disk {reply.disk_id} created; its data arrives as task {reply.task_id} runs")
    return None


async def verify_backups(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.backups.VerifyBackups(backup_pb2.VerifyBackupsRequest(
        vault_id=args.vault_id, backup_ids=args.backup_ids))
    if args.wait:
        return await wait_for(client, out, [reply.task_id])
    out.done(reply, f"verifying vault {args.vault_id}: task {reply.task_id}")
    return None


async def collect_garbage(args, client: CbrClient, out: Output) -> int | None:
    request = backup_pb2.CollectGarbageRequest(vault_id=args.vault_id)
    if args.grace_seconds is not None:
        request.grace_seconds = args.grace_seconds
    reply = await client.backups.CollectGarbage(request)
    if args.wait:
        return await wait_for(client, out, [reply.task_id])
    out.done(reply, f"collecting garbage in vault {args.vault_id}: task {reply.task_id}")
    return None

"""`cbr replication ...`: ReplicationService: copy a backup, or every backup of a vault not yet copied, into a
replication vault of another region; the records of those copies and how far they lag behind; the regions this one replicates to."""
from __future__ import annotations

import asyncio
from typing import Sequence

from rich.progress import Progress

from cbr.replication.v1 import replication_pb2 as rp
from cbr_cli import exit_codes
from cbr_cli.arguments import BACKUP_ID, REMOTE_VAULT_ID, VAULT_ID, add_command, add_enum, add_group, add_paging, \
    object_id, page
from cbr_cli.client import CbrClient
from cbr_cli.output import Column, Output, bytes_text, enum_of, time_text
from cbr_cli.progress import Meter, bar_columns, bar_fields
from cbr_cli.resolve import short_id

RECORD_ID = object_id("a replication record")
REMOTE_BACKUP_ID = object_id("a backup")  # of the destination region: by id only
FINAL = frozenset({rp.REPLICATION_STATUS_SUCCESS, rp.REPLICATION_STATUS_FAILED, rp.REPLICATION_STATUS_CANCELLED,
                   rp.REPLICATION_STATUS_SKIPPED})
SUCCESSFUL = frozenset({rp.REPLICATION_STATUS_SUCCESS, rp.REPLICATION_STATUS_SKIPPED})
POLL_SECONDS = 0.5
# The request fields a refusal may name, as these commands spell them.
FIELDS = {"destination_region": "--to-region", "destination_project_id": "--to-project",
          "destination_vault_id": "--to-vault", "request_id": "--request-id", "name": "--name",
          "description": "--description", "source_vault_id": "--vault", "source_backup_id": "--backup",
          "destination_backup_id": "--replica", "replication_record_id": "RECORD_ID",
          "rate_limit_mbps": "--rate-limit-mbps"}

RECORD_COLUMNS = (
    Column("ID", lambda r: r.replication_record_id, is_id=True),
    Column("STATUS", lambda r: enum_of(r, "status")),
    Column("PROGRESS", lambda r: f"{r.progress}%"),
    Column("BACKUP", lambda r: r.source_backup_id, is_id=True),
    Column("TO", lambda r: f"{r.destination_region}/{short_id(r.destination_vault_id)}", is_name=True),
    Column("REPLICA", lambda r: r.destination_backup_id, is_id=True),
    Column("SENT", lambda r: bytes_text(r.transferred_bytes)),     # chunk bytes the destination lacked
    Column("PRESENT", lambda r: bytes_text(r.counters.present_bytes)),  # already there: not sent
    Column("CREATED", lambda r: time_text(r.created_time, minutes=True)),
    Column("ERROR", lambda r: r.error.code or r.error.message, is_name=True),
)
STARTED_COLUMNS = (
    Column("BACKUP", lambda b: b.backup_id, is_id=True),
    Column("RECORD", lambda b: b.replication_record_id, is_id=True),
    Column("TASK", lambda b: b.task_id, is_id=True),
)
LAG_COLUMNS = (
    Column("RESOURCE", lambda g: g.resource_id, is_id=True),
    Column("TYPE", lambda g: enum_of(g, "resource_type")),
    Column("REGION", lambda g: g.destination_region),
    Column("LAG", lambda g: duration_text(g.lag_seconds)),
    Column("OLDEST UNREPLICATED", lambda g: g.oldest_unreplicated_backup_id, is_id=True),
    Column("UNREPLICATED", lambda g: str(g.unreplicated_backups)),
    Column("NEWEST REPLICATED", lambda g: g.newest_replicated_backup_id, is_id=True),
)
REGION_COLUMNS = (
    Column("REGION", lambda r: r.name),
    Column("REPLICATES TO", lambda r: ", ".join(r.replication_destinations)),
)


def register(groups, common) -> None:
    commands = add_group(groups, "replication", "copy backups into another region; the records of those copies")

    parser = add_command(commands, "replicate", replicate_backup, common,
                         "copy a backup into a replication vault of another region (only the chunks it lacks "
                         "travel); a backup already copied there answers with its record", fields=FIELDS)
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    _add_destination(parser)
    parser.add_argument("--name", default="", help="the replica's name (default: the backup's)")
    parser.add_argument("--description", default="", help="the replica's description (default: the backup's)")
    _add_request_id_and_wait(parser)

    parser = add_command(commands, "replicate-vault", replicate_vault, common,
                         "copy every available backup of a vault that has no replica in the destination vault "
                         "(or whose last copy failed)", fields=FIELDS)
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    _add_destination(parser)
    _add_request_id_and_wait(parser)

    parser = add_command(commands, "list", list_records, common, "list replication records, newest first",
                         fields=FIELDS)
    parser.add_argument("--vault", type=VAULT_ID, metavar="VAULT_ID", help="records of this vault's backups")
    parser.add_argument("--backup", type=BACKUP_ID, metavar="BACKUP_ID", help="records of this backup")
    parser.add_argument("--to-vault", type=REMOTE_VAULT_ID, metavar="VAULT_ID",
                        help="records into this destination vault (its id: a vault of another region)")
    parser.add_argument("--replica", type=REMOTE_BACKUP_ID, metavar="BACKUP_ID",
                        help="the record that made this replica (a backup id of the destination region)")
    add_enum(parser, "--status", rp.ReplicationStatus, help="only records in this status")
    add_paging(parser)

    parser = add_command(commands, "show", show_record, common,
                         "show one replication record: status, progress, exact byte counts, manifest digests",
                         aliases=("get",), fields=FIELDS)
    parser.add_argument("record_id", type=RECORD_ID, metavar="RECORD_ID")

    parser = add_command(commands, "lag", show_lag, common,
                         "per resource of a vault and destination region: the age of its oldest backup without a "
                         "replica there", fields=FIELDS)
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--to-region", default="", metavar="REGION",
                        help="only this destination region (default: every region the vault's records name)")

    add_command(commands, "capabilities", show_capabilities, common,
                "the regions this region replicates to (from its configuration)")


def _add_destination(parser) -> None:
    parser.add_argument("--to-region", required=True, metavar="REGION", help="the destination region")
    parser.add_argument("--to-project", required=True, metavar="PROJECT_ID",
                        help="the project of the destination vault")
    parser.add_argument("--to-vault", required=True, type=REMOTE_VAULT_ID, metavar="VAULT_ID",
                        help="a replication vault of the backup's type in that project")


def _add_request_id_and_wait(parser) -> None:
    parser.add_argument("--rate-limit-mbps", type=float, default=0.0, metavar="MB/S",
                        help="at most this many MB/s (10^6 bytes) of chunk data per copy; 0 (default): only the "
                             "limit the region pair has")
    parser.add_argument("--request-id", default="", metavar="ID",
                        help="idempotency key (0-64 letters, digits, '_', '-'): the same one with the same "
                             "arguments answers the first call's records")
    parser.add_argument("--wait", action="store_true",
                        help="follow with progress bars until the copies end; exit 11 unless every one succeeds")


async def replicate_backup(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.replication.ReplicateBackup(rp.ReplicateBackupRequest(
        backup_id=args.backup_id, destination_region=args.to_region, destination_project_id=args.to_project,
        destination_vault_id=args.to_vault, name=args.name, description=args.description,
        request_id=args.request_id, rate_limit_mbps=args.rate_limit_mbps))
    if args.wait:
        [record] = await watch_records(client, out, [reply.replication_record_id])
        out.one(record)
        return _report_unsuccessful(out, [record])
    out.one(await _record(client, reply.replication_record_id))
    return None


async def replicate_vault(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.replication.ReplicateCheckpoint(rp.ReplicateCheckpointRequest(
        vault_id=args.vault_id, destination_region=args.to_region, destination_project_id=args.to_project,
        destination_vault_id=args.to_vault, request_id=args.request_id, rate_limit_mbps=args.rate_limit_mbps))
    if not reply.backups:
        out.note("nothing to replicate: every available backup has a replica there or one under way")
    if not args.wait:
        out.many(reply.backups, STARTED_COLUMNS)
        return None
    records = await watch_records(client, out, [b.replication_record_id for b in reply.backups])
    out.many(records, RECORD_COLUMNS)
    return _report_unsuccessful(out, records)


async def list_records(args, client: CbrClient, out: Output) -> None:
    reply = await client.replication.ListReplicationRecords(rp.ListReplicationRecordsRequest(
        page=page(args), source_vault_id=args.vault, source_backup_id=args.backup,
        destination_vault_id=args.to_vault, destination_backup_id=args.replica, status=args.status))
    out.many(reply.replication_records, RECORD_COLUMNS, reply.count)


async def show_record(args, client: CbrClient, out: Output) -> None:
    out.one(await _record(client, args.record_id))


async def show_lag(args, client: CbrClient, out: Output) -> None:
    reply = await client.replication.GetReplicationLag(rp.GetReplicationLagRequest(
        vault_id=args.vault_id, destination_region=args.to_region))
    out.many(reply.lags, LAG_COLUMNS, len(reply.lags))


def duration_text(seconds: int) -> str:
    """'0s', '45s', '12m', '3h 05m', '2d 04h'."""
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        return f"{hours}h {minutes % 60:02d}m"
    return f"{days}d {hours % 24:02d}h"


async def show_capabilities(args, client: CbrClient, out: Output) -> None:
    reply = await client.replication.GetReplicationCapabilities(rp.GetReplicationCapabilitiesRequest())
    out.many(reply.regions, REGION_COLUMNS, len(reply.regions))


async def _record(client: CbrClient, record_id: str) -> rp.ReplicationRecord:
    return (await client.replication.GetReplicationRecord(
        rp.GetReplicationRecordRequest(replication_record_id=record_id))).replication_record


async def watch_records(client: CbrClient, out: Output, record_ids: Sequence[str]) -> list[rp.ReplicationRecord]:
    """A progress bar per record on stderr, polled, until every record ends; the final records in order."""
    with Progress(*bar_columns(), console=out.stderr, disable=out.quiet) as progress:
        return list(await asyncio.gather(*(_watch_one(client, progress, record_id) for record_id in record_ids)))


async def _watch_one(client: CbrClient, progress: Progress, record_id: str) -> rp.ReplicationRecord:
    bar, meter = None, Meter()
    while True:
        record = await _record(client, record_id)
        done = 100 if record.status == rp.REPLICATION_STATUS_SUCCESS else min(record.progress, 99)
        fields = dict(description=f"replicate {record.name or record.source_backup_id[:8]} to "
                                  f"{record.destination_region}",
                      status=enum_of(record, "status"), **bar_fields(meter, record, done, record.status in FINAL))
        if bar is None:
            bar = progress.add_task(total=100, **fields)
        else:
            progress.update(bar, **fields)
        if record.status in FINAL:
            return record
        await asyncio.sleep(POLL_SECONDS)


def _report_unsuccessful(out: Output, records: Sequence[rp.ReplicationRecord]) -> int:
    unsuccessful = [r for r in records if r.status not in SUCCESSFUL]
    for r in unsuccessful:
        code = f" ({r.error.code})" if r.error.code else ""
        out.error(f"replication {r.replication_record_id} of backup {r.source_backup_id} "
                  f"{enum_of(r, 'status')}{code}: {r.error.message or 'no reason given'}",
                  "TASK_UNSUCCESSFUL", exit_codes.TASK_UNSUCCESSFUL,
                  {"replication_record_id": r.replication_record_id,
                   "status": rp.ReplicationStatus.Name(r.status), "cbr_code": r.error.code})
    return exit_codes.TASK_UNSUCCESSFUL if unsuccessful else exit_codes.OK

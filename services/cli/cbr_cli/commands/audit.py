"""`cbr audit list`: the audit trail, every state-changing call to the region's services (VaultService)."""
from __future__ import annotations

from cbr.vault.v1 import vault_pb2
from cbr_cli.arguments import add_command, add_group, add_paging, page, timestamp
from cbr_cli.client import CbrClient
from cbr_cli.output import Column, Output, time_text
from cbr_cli.resolve import short_id

MAX_IDS_SHOWN = 3  # in the table; --json has them all


def _ids(event: vault_pb2.AuditEvent) -> str:
    shown = [f"{i.name}={short_id(i.value)}" for i in event.ids[:MAX_IDS_SHOWN]]  # short ids resolve back
    more = len(event.ids) - MAX_IDS_SHOWN
    return ", ".join(shown + ([f"+{more}"] if more > 0 else []))


def _outcome(event: vault_pb2.AuditEvent) -> str:
    return event.code if not event.cbr_code else f"{event.code} {event.cbr_code}"


AUDIT_COLUMNS = (
    Column("TIME", lambda e: time_text(e.time)),
    Column("PROJECT", lambda e: e.project_id, is_id=True),
    Column("SUBJECT", lambda e: e.subject),
    Column("METHOD", lambda e: e.method),
    Column("OUTCOME", _outcome),
    Column("IDS", _ids, is_name=True),  # gives way (ellipsis) when the table would pass 120 columns
)


def register(groups, common) -> None:
    commands = add_group(groups, "audit", "the audit trail: who changed what, when, and how it ended")
    parser = add_command(commands, "list", list_events, common,
                         "list audited calls, newest first (your project's; every project's for cbr_auditor)",
                         fields={"project_id": "--project", "method": "--method", "resource_id": "--resource",
                                 "since": "--since", "until": "--until", "outcome": "--outcome",
                                 "subject": "--subject"})
    parser.add_argument("--project", default="", metavar="PROJECT_ID",
                        help="this project's calls (another project's needs the cbr_auditor role)")
    parser.add_argument("--method", default="", metavar="METHOD",
                        help="calls of this method: DeleteBackup, or cbr.backup.v1.BackupService/DeleteBackup")
    parser.add_argument("--resource", default="", metavar="ID", help="calls that named or answered this id")
    parser.add_argument("--subject", default="", metavar="SUBJECT", help="calls by this subject (user)")
    parser.add_argument("--since", type=timestamp, metavar="TIME",
                        help="calls that arrived at or after (ISO 8601; local time if no offset)")
    parser.add_argument("--until", type=timestamp, metavar="TIME", help="calls that arrived before (ISO 8601)")
    parser.add_argument("--outcome", default="", metavar="OUTCOME",
                        help="ok, error (any other answer) or a gRPC code: invalid_argument, permission_denied, ...")
    add_paging(parser)


async def list_events(args, client: CbrClient, out: Output) -> None:
    request = vault_pb2.ListAuditEventsRequest(
        page=page(args), project_id=args.project, method=args.method, resource_id=args.resource,
        subject=args.subject, since=args.since, until=args.until, outcome=args.outcome)
    reply = await client.vaults.ListAuditEvents(request)
    out.many(reply.events, AUDIT_COLUMNS, reply.count)

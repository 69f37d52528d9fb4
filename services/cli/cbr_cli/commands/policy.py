"""`cbr policy ...`: PolicyService's policies (applying one to a vault is `cbr vault associate-policy`)."""
from __future__ import annotations

import argparse

from cbr.policy.v1 import policy_pb2
from cbr_cli.arguments import POLICY_ID, VAULT_ID, UsageError, add_command, add_enum, add_group, add_paging, page, \
    timestamp
from cbr_cli.errors import LIST_FILTERS
from cbr_cli.client import CbrClient
from cbr_cli.output import Column, Output, enum_of, time_text
from cbr_cli.resolve import names_of, short_id

# Options that make up an operation definition: flag, field, help.
DEFINITION_OPTIONS = (
    ("--max-backups", "max_backups", "keep the newest N automatic backups (1..99999; -1: no count limit)"),
    ("--retention-days", "retention_duration_days", "delete automatic backups older than N days (1..99999; -1: "
                                                    "keep); not with --max-backups or the GFS counts"),
    ("--day-backups", "day_backups", "GFS: also keep the newest backup of each of the last N days (0..100)"),
    ("--week-backups", "week_backups", "... of each of the last N weeks (0..100)"),
    ("--month-backups", "month_backups", "... of each of the last N months (0..100)"),
    ("--year-backups", "year_backups", "... of each of the last N years (0..100)"),
    ("--full-backup-interval", "full_backup_interval", "backup policies: every Nth automatic backup reads "
                                                       "everything (1..100; -1: never forced)"),
)
TEXT_OPTIONS = (
    ("--timezone", "timezone", "UTC+08:00, UTC or an IANA name; the zone the patterns and GFS periods are read "
                               "in (needed with GFS counts)"),
    ("--destination-region", "destination_region", "replication policies: the region replicas go to"),
    ("--destination-project", "destination_project_id", "replication policies: the project there"),
)
TEXT_METAVARS = {"timezone": "ZONE", "destination_region": "REGION", "destination_project_id": "PROJECT_ID"}
OPTIONAL_COUNTS = ("max_backups", "retention_duration_days", "full_backup_interval")
UNSET = -1

POLICY_COLUMNS = (
    Column("ID", lambda p: p.policy_id, is_id=True),
    Column("NAME", lambda p: p.name, is_name=True),
    Column("TYPE", lambda p: enum_of(p, "operation_type")),
    Column("ENABLED", lambda p: "yes" if p.enabled else "no"),
    Column("NEXT RUN", lambda p: time_text(p.next_run_time, minutes=True)),  # the service's, from its clock
    Column("PATTERNS", lambda p: " | ".join(p.trigger.patterns), is_name=True),
    Column("TIMEZONE", lambda p: p.operation_definition.timezone or "UTC"),
    Column("KEEPS", lambda p: retention_text(p.operation_definition)),
    Column("VAULTS", lambda p: str(len(p.associated_vaults))),
)


def register(groups, common) -> None:
    commands = add_group(groups, "policy", "backup and replication policies: when they fire, what they keep")

    parser = add_command(commands, "create", create_policy, common, "create a policy",
                         fields={"start_time": "--start", "patterns": "--pattern"})
    parser.add_argument("name", help="1..64 letters, digits, '_' and '-'")
    add_enum(parser, "--type", policy_pb2.OperationType, dest="operation_type", required=True,
             help="what it does when it fires")
    _add_trigger_options(parser, required=True)
    parser.add_argument("--disabled", action="store_true", help="create it switched off (default: enabled)")
    _add_definition_options(parser)

    parser = add_command(commands, "show", show_policy, common, "show one policy and the vaults it applies to",
                         aliases=("get",))
    parser.add_argument("policy_id", type=POLICY_ID, metavar="POLICY_ID")

    parser = add_command(commands, "list", list_policies, common, "list policies, newest first", fields=LIST_FILTERS)
    add_enum(parser, "--type", policy_pb2.OperationType, dest="operation_type")
    parser.add_argument("--vault", type=VAULT_ID, metavar="VAULT_ID",
                        help="policies applied to this vault")
    add_paging(parser)

    parser = add_command(commands, "update", update_policy, common,
                         "change a policy; options left out stay as they are",
                         fields={"start_time": "--start", "patterns": "--pattern"})
    parser.add_argument("policy_id", type=POLICY_ID, metavar="POLICY_ID")
    parser.add_argument("--name")
    parser.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None,
                        help="switch it on or off")
    _add_trigger_options(parser, required=False)
    _add_definition_options(parser)

    parser = add_command(commands, "delete", delete_policy, common,
                         "delete a policy (the vaults it applies to lose it)")
    parser.add_argument("policy_id", type=POLICY_ID, metavar="POLICY_ID")

    parser = add_command(commands, "list-ticks", list_ticks, common,
                         "what the scheduler ran, skipped and failed, newest first", aliases=("ticks",),
                         fields=LIST_FILTERS)
    parser.add_argument("--policy", type=POLICY_ID, metavar="POLICY_ID")
    parser.add_argument("--vault", type=VAULT_ID, metavar="VAULT_ID")
    add_paging(parser)

    parser = add_command(commands, "preview", preview_retention, common,
                         "which backups of a vault a retention rule keeps and deletes, and why (deletes nothing)",
                         fields={"policy_id": "--policy"})
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--policy", type=POLICY_ID, metavar="POLICY_ID",
                        help="try this policy's rule (default: the vault's backup policy)")
    _add_definition_options(parser)


def _add_trigger_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--pattern", dest="patterns", action="append", required=required, default=None,
                        metavar="RRULE", help="when it fires, e.g. 'FREQ=DAILY;BYHOUR=6;BYMINUTE=0' or "
                                              "'FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=22;BYMINUTE=30' (repeatable; "
                                              "FREQ DAILY|WEEKLY, INTERVAL, BYDAY, BYHOUR, BYMINUTE)"
                                              + ("" if required else "; replaces all the old ones"))
    parser.add_argument("--start", type=timestamp, metavar="TIME",
                        help="no fire before this, and INTERVAL counts from its date (ISO 8601; default: now)")


def _add_definition_options(parser: argparse.ArgumentParser) -> None:
    for flag, field, help in DEFINITION_OPTIONS:
        parser.add_argument(flag, dest=field, type=int, metavar="N", help=help)
    for flag, field, help in TEXT_OPTIONS:
        parser.add_argument(flag, dest=field, metavar=TEXT_METAVARS[field], help=help)


def _definition_given(args) -> dict:
    return {field: getattr(args, field) for _, field, _ in DEFINITION_OPTIONS + TEXT_OPTIONS
            if getattr(args, field) is not None}


def definition_message(values: dict) -> policy_pb2.OperationDefinition:
    """-1 (CBR's "unset") for the optional counts is sent as unset."""
    return policy_pb2.OperationDefinition(**{k: v for k, v in values.items()
                                             if not (k in OPTIONAL_COUNTS and v == UNSET)})


def retention_text(definition: policy_pb2.OperationDefinition) -> str:
    parts = []
    if definition.HasField("max_backups"):
        parts.append(f"{definition.max_backups} newest")
    if definition.HasField("retention_duration_days"):
        parts.append(f"{definition.retention_duration_days} days")
    for period in ("day", "week", "month", "year"):
        count = getattr(definition, f"{period}_backups")
        if count:
            parts.append(f"{count} {period}{'s' if count > 1 else ''}")
    return ", ".join(parts) or "all"


async def create_policy(args, client: CbrClient, out: Output) -> None:
    trigger = policy_pb2.PolicyTrigger(patterns=args.patterns)
    if args.start is not None:
        trigger.start_time.CopyFrom(args.start)
    reply = await client.policies.CreatePolicy(policy_pb2.CreatePolicyRequest(
        name=args.name, operation_type=args.operation_type, enabled=not args.disabled, trigger=trigger,
        operation_definition=definition_message(_definition_given(args))))
    out.one(reply.policy)


async def show_policy(args, client: CbrClient, out: Output) -> None:
    out.one((await client.policies.GetPolicy(policy_pb2.GetPolicyRequest(policy_id=args.policy_id))).policy)


async def list_policies(args, client: CbrClient, out: Output) -> None:
    reply = await client.policies.ListPolicies(policy_pb2.ListPoliciesRequest(
        page=page(args), operation_type=args.operation_type, vault_id=args.vault))
    out.many(reply.policies, POLICY_COLUMNS, reply.count)


async def update_policy(args, client: CbrClient, out: Output) -> None:
    """The service replaces a trigger or an operation definition whole; so that an option left out stays, the
    ones given are laid over the policy as it is now."""
    request = policy_pb2.UpdatePolicyRequest(policy_id=args.policy_id)
    if args.name is not None:
        request.name = args.name
    if args.enabled is not None:
        request.enabled = args.enabled
    definition = _definition_given(args)
    trigger_given = args.patterns is not None or args.start is not None
    if not (trigger_given or definition or request.HasField("name") or request.HasField("enabled")):
        raise UsageError("nothing to change: give at least one option (see cbr policy update --help)")
    if trigger_given or definition:
        current = (await client.policies.GetPolicy(policy_pb2.GetPolicyRequest(policy_id=args.policy_id))).policy
        if trigger_given:
            request.trigger.CopyFrom(current.trigger)
            if args.patterns is not None:
                request.trigger.patterns[:] = args.patterns
            if args.start is not None:
                request.trigger.start_time.CopyFrom(args.start)
        if definition:
            old = current.operation_definition
            merged = {field.name: getattr(old, field.name) for field in old.DESCRIPTOR.fields
                      if field.name not in OPTIONAL_COUNTS or old.HasField(field.name)}
            request.operation_definition.CopyFrom(definition_message({**merged, **definition}))
    out.one((await client.policies.UpdatePolicy(request)).policy)


def tick_columns(vaults: dict[str, str]) -> tuple[Column, ...]:
    return (
        Column("SCHEDULED", lambda t: time_text(t.scheduled_time)),
        Column("STATUS", lambda t: enum_of(t, "status")),
        Column("VAULT", lambda t: vaults.get(t.vault_id) or short_id(t.vault_id), is_name=True),
        Column("CHECKPOINT", lambda t: t.checkpoint_id or "-", is_id=True),
        Column("REASON", lambda t: t.reason, is_name=True),
    )
DECISION_COLUMNS = (
    Column("BACKUP", lambda d: d.backup_id, is_id=True),
    Column("CREATED", lambda d: time_text(d.created_time)),
    Column("KEEP", lambda d: "keep" if d.keep else "delete"),
    Column("WHY", lambda d: ", ".join(d.reasons)),
)


async def list_ticks(args, client: CbrClient, out: Output) -> None:
    reply = await client.policies.ListTicks(policy_pb2.ListTicksRequest(
        page=page(args), policy_id=args.policy, vault_id=args.vault))
    vaults = {} if out.as_json or out.quiet else await names_of(client, "vault", (t.vault_id for t in reply.ticks))
    out.many(reply.ticks, tick_columns(vaults), reply.count)


async def preview_retention(args, client: CbrClient, out: Output) -> None:
    request = policy_pb2.PreviewRetentionRequest(vault_id=args.vault_id)
    definition = _definition_given(args)
    if definition and args.policy:
        raise UsageError("give either --policy or a rule's options, not both")
    if definition:
        request.operation_definition.CopyFrom(definition_message(definition))
    elif args.policy:
        request.policy_id = args.policy
    reply = await client.policies.PreviewRetention(request)
    out.many(reply.decisions, DECISION_COLUMNS, len(reply.decisions))


async def delete_policy(args, client: CbrClient, out: Output) -> None:
    reply = await client.policies.DeletePolicy(policy_pb2.DeletePolicyRequest(policy_id=args.policy_id))
    out.done(reply, f"deleted policy {args.policy_id}")

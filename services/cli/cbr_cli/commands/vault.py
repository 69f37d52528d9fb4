"""`cbr vault ...`: every VaultService call (policy calls take ids; policies themselves are `cbr policy`'s)."""
from __future__ import annotations

import argparse

from cbr.common.v1 import common_pb2
from cbr.vault.v1 import vault_pb2
from cbr_cli.arguments import POLICY_ID, REMOTE_VAULT_ID, RESOURCE_ID, SIZE_HELP, VAULT_ID, UsageError, add_command, \
    add_enum, add_group, add_hidden, add_paging, add_wait, gib_count, page, server_disks, tag, whole_gib
from cbr_cli.client import CbrClient
from cbr_cli.commands.tasks import wait_for
from cbr_cli.errors import LIST_FILTERS
from cbr_cli.output import Column, Output, bytes_text, enum_of, joined, time_text
from cbr_cli.resolve import names_of, short_id

def vault_columns(policies: dict[str, str]) -> tuple[Column, ...]:
    """`policies`: policy id -> name, so the table names the policy."""
    return (
        Column("ID", lambda v: v.vault_id, is_id=True),
        Column("NAME", lambda v: v.name, is_name=True),
        Column("TYPE", lambda v: enum_of(v, "object_type")),
        Column("PROTECT", lambda v: enum_of(v, "protect_type")),
        Column("STATUS", lambda v: enum_of(v, "status")),
        Column("CAPACITY", lambda v: f"{v.size_gb} GiB"),
        Column("USED", lambda v: bytes_text(v.used_bytes)),
        Column("RESOURCES", lambda v: str(len(v.resources))),
        Column("POLICY", lambda v: policies.get(v.backup_policy_id) or short_id(v.backup_policy_id), is_name=True),
        Column("CREATED", lambda v: time_text(v.created_time, minutes=True)),
    )
TAG_COLUMNS = (Column("KEY", lambda t: t.key), Column("VALUE", lambda t: t.value))
PROJECT_TAG_COLUMNS = (Column("KEY", lambda t: t.key), Column("VALUES", lambda t: joined(t.values)))


VAULT_SIZE_HELP = f"capacity, a whole number of GiB: 100G, 1T ({SIZE_HELP})"
OPTION_FIELDS = {"resource_id": "--resource", "resource_ids": "--resource", "policy_id": "--policy"}


def register(groups, common) -> None:
    commands = add_group(groups, "vault", "vaults, the resources they protect, their policies and tags")

    parser = add_command(commands, "create", create_vault, common, "create a vault", fields=OPTION_FIELDS)
    parser.add_argument("name")
    add_enum(parser, "--type", common_pb2.ObjectType, dest="object_type", required=True,
             help="what the vault holds")
    add_enum(parser, "--protect", vault_pb2.ProtectType, dest="protect_type", default=vault_pb2.PROTECT_TYPE_BACKUP,
             help="backup (default) or replication")
    _add_size(parser, required=True)
    parser.add_argument("--description", default="")
    add_enum(parser, "--consistent-level", vault_pb2.ConsistentLevel, help="server vaults: crash or app consistent")
    parser.add_argument("--auto-expand", action="store_true", help="grow the vault instead of failing when full")
    parser.add_argument("--auto-bind", action="store_true", help="add new resources matching --bind-rule by itself")
    parser.add_argument("--bind-rule", type=tag, action="append", default=[], metavar="KEY=VALUE",
                        help="a tag resources must carry to be auto-bound (repeatable)")
    parser.add_argument("--smn-notify", action=argparse.BooleanOptionalAction, default=None,
                        help="notify on capacity use (default: on)")
    parser.add_argument("--threshold", type=int, default=None, help="capacity-use notification percent (default 80)")
    parser.add_argument("--locked", action="store_true", help="lock backups (WORM); cannot be undone")
    parser.add_argument("--unencrypted", action="store_true",
                        help="store this vault's backups unencrypted (default: encrypted); cannot be changed later")
    _add_resource_options(parser, positional=False)
    parser.add_argument("--policy", type=POLICY_ID, metavar="POLICY_ID",
                        help="backup policy to associate")
    parser.add_argument("--tag", type=tag, action="append", default=[], metavar="KEY=VALUE", help="(repeatable)")

    parser = add_command(commands, "show", show_vault, common, "show one vault and its resources", aliases=("get",))
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")

    parser = add_command(commands, "list", list_vaults, common, "list vaults",
                         fields={**LIST_FILTERS, "vault_ids": "--id", "resource_ids": "--resource"})
    parser.add_argument("--name", default="", help="name contains this")
    add_enum(parser, "--type", common_pb2.ObjectType, dest="object_type")
    add_enum(parser, "--protect", vault_pb2.ProtectType, dest="protect_type")
    add_enum(parser, "--status", vault_pb2.VaultStatus)
    parser.add_argument("--policy", type=POLICY_ID, metavar="POLICY_ID", help="vaults with this policy")
    parser.add_argument("--resource", type=RESOURCE_ID, action="append", default=[], metavar="RESOURCE_ID",
                        help="vaults holding this resource (repeatable: any of them)")
    parser.add_argument("--id", type=VAULT_ID, action="append", default=[], metavar="VAULT_ID",
                        help="only these (repeatable)")
    add_paging(parser)

    parser = add_command(commands, "update", update_vault, common, "change a vault; options left out stay")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--name")
    parser.add_argument("--description")
    _add_size(parser, required=False)
    for flag in ("--auto-expand", "--auto-bind", "--smn-notify", "--locked"):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threshold", type=int)

    parser = add_command(commands, "delete", delete_vault, common,
                         "delete a vault and every backup in it (runs as a vault_delete task)")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    add_wait(parser)

    parser = add_command(commands, "add-resources", add_resources, common, "protect resources in a vault")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    _add_resource_options(parser, positional=True)
    add_enum(parser, "--type", common_pb2.ObjectType, dest="object_type",
             help="the resources' type (default: the vault's)")

    parser = add_command(commands, "remove-resources", remove_resources, common, "stop protecting resources")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("resource_ids", nargs="+", type=RESOURCE_ID, metavar="RESOURCE_ID")

    parser = add_command(commands, "migrate-resources", migrate_resources, common,
                         "move resources (and their backups) to another vault of the same type",
                         fields={"destination_vault_id": "DESTINATION_VAULT_ID"})
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("destination_vault_id", type=VAULT_ID, metavar="DESTINATION_VAULT_ID")
    parser.add_argument("resource_ids", nargs="+", type=RESOURCE_ID, metavar="RESOURCE_ID")

    parser = add_command(commands, "associate-policy", associate_policy, common, "apply a policy to a vault")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("policy_id", type=POLICY_ID, metavar="POLICY_ID")
    parser.add_argument("--destination-vault", type=REMOTE_VAULT_ID, metavar="VAULT_ID",
                        help="replication policies: the vault replicas go to")

    parser = add_command(commands, "dissociate-policy", dissociate_policy, common, "take a policy off a vault")
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("policy_id", type=POLICY_ID, metavar="POLICY_ID")

    parser = add_command(commands, "set-bind-rules", set_bind_rules, common,
                         "replace the tags that auto-bind resources to the vault", fields={"bind_rules": "--rule"})
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("--rule", type=tag, action="append", default=[], metavar="KEY=VALUE",
                        help="(repeatable; none clears the rules)")
    parser.add_argument("--auto-bind", action=argparse.BooleanOptionalAction, default=True,
                        help="bind matching resources by themselves (default: on)")

    parser = add_command(commands, "list-tags", list_vault_tags, common, "list a vault's tags", aliases=("tags",))
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")

    add_command(commands, "list-project-tags", list_project_tags, common, "every tag on the project's vaults",
                aliases=("project-tags",))

    parser = add_command(commands, "add-tags", create_vault_tags, common,
                         "set tags on a vault (a key it has already gets the new value)", aliases=("tag",),
                         fields={"tags": "KEY=VALUE"})
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("tags", nargs="+", type=tag, metavar="KEY=VALUE")

    parser = add_command(commands, "remove-tags", delete_vault_tags, common, "remove tags from a vault",
                         aliases=("untag",), fields={"keys": "KEY"})
    parser.add_argument("vault_id", type=VAULT_ID, metavar="VAULT_ID")
    parser.add_argument("keys", nargs="+", metavar="KEY")


def _add_size(parser, required: bool) -> None:
    # Not `required=` for argparse: the old spelling may give it (create_vault checks).
    parser.add_argument("--size", dest="size_gb", type=whole_gib, metavar="SIZE",
                        help=VAULT_SIZE_HELP + (" (required)" if required else ""))
    add_hidden(parser, "--size-gb", dest="size_gb", type=gib_count)  # the old spelling: a bare number of GiB


def _add_resource_options(parser, positional: bool) -> None:
    if positional:
        parser.add_argument("resource_ids", nargs="+", type=RESOURCE_ID, metavar="RESOURCE_ID")
    else:
        parser.add_argument("--resource", dest="resource_ids", type=RESOURCE_ID, action="append", default=[],
                            metavar="RESOURCE_ID", help="a resource to protect, of the vault's type (repeatable)")
    parser.add_argument("--exclude", type=server_disks, action="append", default=[],
                        metavar="SERVER_ID=DISK_ID[,DISK_ID]", help="server resources: disks to leave out")


def resource_refs(resource_ids: list[str], object_type: int,
                  excludes: list[tuple[str, list[str]]]) -> list[vault_pb2.ResourceRef]:
    excluded = dict(excludes)
    stray = set(excluded) - set(resource_ids)
    if stray:
        raise UsageError(f"--exclude names {sorted(stray)[0]}, which is not among the resources given")
    return [vault_pb2.ResourceRef(resource_id=rid, type=object_type, exclude_volumes=excluded.get(rid, []))
            for rid in resource_ids]


async def create_vault(args, client: CbrClient, out: Output) -> None:
    if args.size_gb is None:
        raise UsageError("the following argument is required: --size (the vault's capacity, e.g. 100G)")
    request = vault_pb2.CreateVaultRequest(
        name=args.name, description=args.description, object_type=args.object_type, protect_type=args.protect_type,
        consistent_level=args.consistent_level, size_gb=args.size_gb, auto_expand=args.auto_expand,
        auto_bind=args.auto_bind, bind_rules=args.bind_rule, locked=args.locked,
        resources=resource_refs(args.resource_ids, args.object_type, args.exclude),
        backup_policy_id=args.policy, tags=args.tag)
    if args.unencrypted:
        request.encrypted = False
    if args.smn_notify is not None:
        request.smn_notify = args.smn_notify
    if args.threshold is not None:
        request.threshold = args.threshold
    out.one((await client.vaults.CreateVault(request)).vault)


async def show_vault(args, client: CbrClient, out: Output) -> None:
    out.one((await client.vaults.GetVault(vault_pb2.GetVaultRequest(vault_id=args.vault_id))).vault)


async def list_vaults(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.ListVaults(vault_pb2.ListVaultsRequest(
        page=page(args), name=args.name, object_type=args.object_type, protect_type=args.protect_type,
        status=args.status, policy_id=args.policy, resource_ids=args.resource, vault_ids=args.id))
    policies = {} if out.as_json or out.quiet else await names_of(
        client, "policy", (v.backup_policy_id for v in reply.vaults))
    out.many(reply.vaults, vault_columns(policies), reply.count)


async def update_vault(args, client: CbrClient, out: Output) -> None:
    changes = {name: getattr(args, name) for name in ("name", "description", "size_gb", "auto_expand", "auto_bind",
                                                        "smn_notify", "threshold", "locked")
               if getattr(args, name) is not None}
    if not changes:
        raise UsageError("nothing to change: give at least one option (see cbr vault update --help)")
    reply = await client.vaults.UpdateVault(vault_pb2.UpdateVaultRequest(vault_id=args.vault_id, **changes))
    out.one(reply.vault)


async def delete_vault(args, client: CbrClient, out: Output) -> int | None:
    reply = await client.vaults.DeleteVault(vault_pb2.DeleteVaultRequest(vault_id=args.vault_id))
    if args.wait:
        return await wait_for(client, out, reply.task_id)
    out.done(reply, f"deleting vault {args.vault_id}: task {reply.task_id}")
    return None


async def add_resources(args, client: CbrClient, out: Output) -> None:
    object_type = args.object_type
    if not object_type:  # a vault holds one type; ask it rather than make the caller repeat it
        vault = (await client.vaults.GetVault(vault_pb2.GetVaultRequest(vault_id=args.vault_id))).vault
        object_type = vault.object_type
    reply = await client.vaults.AddResources(vault_pb2.AddResourcesRequest(
        vault_id=args.vault_id, resources=resource_refs(args.resource_ids, object_type, args.exclude)))
    out.done(reply, f"added to vault {args.vault_id}: {joined(reply.added_resource_ids)}")


async def remove_resources(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.RemoveResources(vault_pb2.RemoveResourcesRequest(
        vault_id=args.vault_id, resource_ids=args.resource_ids))
    out.done(reply, f"removed from vault {args.vault_id}: {joined(reply.removed_resource_ids)}")


async def migrate_resources(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.MigrateResources(vault_pb2.MigrateResourcesRequest(
        vault_id=args.vault_id, destination_vault_id=args.destination_vault_id, resource_ids=args.resource_ids))
    out.done(reply, f"moved to vault {args.destination_vault_id}: {joined(reply.migrated_resource_ids)}")


async def associate_policy(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.AssociatePolicy(vault_pb2.AssociatePolicyRequest(
        vault_id=args.vault_id, policy_id=args.policy_id, destination_vault_id=args.destination_vault))
    out.done(reply, f"policy {reply.policy_id} applies to vault {reply.vault_id}")


async def dissociate_policy(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.DissociatePolicy(vault_pb2.DissociatePolicyRequest(
        vault_id=args.vault_id, policy_id=args.policy_id))
    out.done(reply, f"policy {reply.policy_id} no longer applies to vault {reply.vault_id}")


async def set_bind_rules(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.SetBindRules(vault_pb2.SetBindRulesRequest(
        vault_id=args.vault_id, auto_bind=args.auto_bind, bind_rules=args.rule))
    out.one(reply.vault)


async def list_vault_tags(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.ListVaultTags(vault_pb2.ListVaultTagsRequest(vault_id=args.vault_id))
    out.many(reply.tags, TAG_COLUMNS)


async def list_project_tags(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.ListProjectTags(vault_pb2.ListProjectTagsRequest())
    out.many(reply.tags, PROJECT_TAG_COLUMNS)


async def create_vault_tags(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.CreateVaultTags(vault_pb2.CreateVaultTagsRequest(vault_id=args.vault_id,
                                                                                   tags=args.tags))
    out.many(reply.tags, TAG_COLUMNS)


async def delete_vault_tags(args, client: CbrClient, out: Output) -> None:
    reply = await client.vaults.DeleteVaultTags(vault_pb2.DeleteVaultTagsRequest(vault_id=args.vault_id,
                                                                                   keys=args.keys))
    out.many(reply.tags, TAG_COLUMNS)

"""`cbr disk|server|file-system ...`: ProtectableService, the inventory of disks, servers and file systems."""
from __future__ import annotations

from cbr.backup.v1 import protectable_pb2
from cbr.common.v1 import common_pb2
from cbr_cli.arguments import DISK_ID, FILE_SYSTEM_ID, SERVER_ID, SIZE_HELP, add_command, add_enum, add_group, \
    add_paging, page, size
from cbr_cli.client import CbrClient
from cbr_cli.output import Column, Output, bytes_text, enum_of, time_text
from cbr_cli.resolve import names_of, short_id

DISK, SERVER, TURBO = common_pb2.OBJECT_TYPE_DISK, common_pb2.OBJECT_TYPE_SERVER, common_pb2.OBJECT_TYPE_TURBO

_ID = Column("ID", lambda p: p.resource_id, is_id=True)
_NAME = Column("NAME", lambda p: p.name, is_name=True)
_STATUS = Column("STATUS", lambda p: enum_of(p, "status"))
_SIZE = Column("SIZE", lambda p: bytes_text(p.size_bytes))
_CREATED = Column("CREATED", lambda p: time_text(p.created_time, minutes=True))


def columns(object_type: int, servers: dict[str, str]) -> tuple[Column, ...]:
    """`servers`: server id -> name, so a disk's row names its server."""
    if object_type == DISK:
        return (_ID, _NAME, _STATUS, _SIZE,
                Column("SERVER", lambda p: servers.get(p.server_id) or short_id(p.server_id), is_name=True), _CREATED)
    if object_type == SERVER:
        return (_ID, _NAME, _STATUS, _SIZE, Column("DISKS", lambda p: ", ".join(
            f"{d.device or '?'}:{d.name or short_id(d.disk_id)}" for d in p.disks), is_name=True), _CREATED)
    return (_ID, _NAME, _STATUS, Column("IN USE", lambda p: bytes_text(p.size_bytes)),
            Column("PATH", lambda p: p.path, is_name=True), _CREATED)


def register(groups, common) -> None:
    commands = add_group(groups, "disk", "disks in the local provider's pool")
    parser = add_command(commands, "create", create_disk, common, "create an empty disk")
    parser.add_argument("name")
    parser.add_argument("--size", type=size, required=True, help=f"its size, a multiple of 512 bytes: {SIZE_HELP}")
    parser = add_command(commands, "update", update_disk, common, "grow a disk (disks never shrink)")
    parser.add_argument("disk_id", type=DISK_ID, metavar="DISK_ID")
    parser.add_argument("--size", type=size, required=True, help=f"the new size: {SIZE_HELP}")
    parser = add_command(commands, "delete", delete_disk, common, "delete a disk that is not attached")
    parser.add_argument("disk_id", type=DISK_ID, metavar="DISK_ID")
    _add_list_and_show(commands, common, DISK, "disk", DISK_ID)

    commands = add_group(groups, "server", "servers: named groups of pool disks")
    parser = add_command(commands, "create", create_server, common, "group disks as a server (they become in use)",
                         aliases=("define",))
    parser.add_argument("name")
    parser.add_argument("disk_ids", nargs="+", type=DISK_ID, metavar="DISK_ID",
                        help="1..60 available disks, in attachment order")
    parser = add_command(commands, "delete", delete_server, common, "ungroup a server; its disks stay")
    parser.add_argument("server_id", type=SERVER_ID, metavar="SERVER_ID")
    _add_list_and_show(commands, common, SERVER, "server", SERVER_ID)

    commands = add_group(groups, "file-system", "file systems: directories under the provider's root",
                         aliases=("fs",))
    parser = add_command(commands, "create", create_file_system, common, "create a file system",
                         aliases=("define",))
    parser.add_argument("name")
    parser = add_command(commands, "delete", delete_file_system, common, "remove a file system and its tree")
    parser.add_argument("file_system_id", type=FILE_SYSTEM_ID, metavar="FILE_SYSTEM_ID")
    _add_list_and_show(commands, common, TURBO, "file system", FILE_SYSTEM_ID)


def _add_list_and_show(commands, common, object_type: int, noun: str, id_type) -> None:
    parser = add_command(commands, "list", list_protectables, common, f"list {noun}s",
                         fields={"resource_id": "--id", "server_id": "--server"})
    parser.set_defaults(object_type=object_type)
    parser.add_argument("--name", default="", help="name contains this")
    add_enum(parser, "--status", protectable_pb2.ProtectableStatus)
    parser.add_argument("--id", type=id_type, metavar=f"{noun.upper().replace(' ', '_')}_ID",
                        help="only this one")
    if object_type == DISK:
        parser.add_argument("--server", type=SERVER_ID, metavar="SERVER_ID",
                            help="disks attached to this server")
    add_paging(parser)
    parser = add_command(commands, "show", show_protectable, common, f"show one {noun}", aliases=("get",))
    parser.set_defaults(object_type=object_type)
    parser.add_argument("resource_id", type=id_type, metavar=f"{noun.upper().replace(' ', '_')}_ID")


async def list_protectables(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.ListProtectables(protectable_pb2.ListProtectablesRequest(
        type=args.object_type, page=page(args), resource_id=args.id, name=args.name, status=args.status,
        server_id=getattr(args, "server", "")))
    servers = {}
    if args.object_type == DISK and not (out.as_json or out.quiet):
        servers = await names_of(client, "server", (p.server_id for p in reply.protectables))
    out.many(reply.protectables, columns(args.object_type, servers), reply.count)


async def show_protectable(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.GetProtectable(protectable_pb2.GetProtectableRequest(
        type=args.object_type, resource_id=args.resource_id))
    out.one(reply.protectable)


async def create_disk(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.CreateDisk(protectable_pb2.CreateDiskRequest(name=args.name,
                                                                                    size_bytes=args.size))
    out.one(reply.disk)


async def update_disk(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.ResizeDisk(protectable_pb2.ResizeDiskRequest(disk_id=args.disk_id,
                                                                                    new_size_bytes=args.size))
    out.one(reply.disk)


async def delete_disk(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.DeleteDisk(protectable_pb2.DeleteDiskRequest(disk_id=args.disk_id))
    out.done(reply, f"deleted disk {args.disk_id}")


async def create_server(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.DefineServer(protectable_pb2.DefineServerRequest(name=args.name,
                                                                                        disk_ids=args.disk_ids))
    out.one(reply.server)


async def delete_server(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.DeleteServer(protectable_pb2.DeleteServerRequest(server_id=args.server_id))
    out.done(reply, f"deleted server {args.server_id}; its disks are available again")


async def create_file_system(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.DefineFileSystem(protectable_pb2.DefineFileSystemRequest(name=args.name))
    out.one(reply.file_system)


async def delete_file_system(args, client: CbrClient, out: Output) -> None:
    reply = await client.protectables.DeleteFileSystem(protectable_pb2.DeleteFileSystemRequest(
        file_system_id=args.file_system_id))
    out.done(reply, f"deleted file system {args.file_system_id}")

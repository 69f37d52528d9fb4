"""`cbr backup ls | dump | mount`: files out of a backup without restoring it, read through the backup service
(which checks every chunk; the client never holds a vault key). Registered into the `backup` group."""
from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import sys

import grpc

from cbr.backup.v1 import backup_pb2
from cbr.common.v1 import common_pb2
from cbr_cli import exit_codes
from cbr_cli.arguments import BACKUP_ID, UsageError, add_command, add_group, count
from cbr_cli.client import CbrClient
from cbr_cli.config import load_config
from cbr_cli.errors import describe
from cbr_cli.output import Output

TYPE_BITS = {backup_pb2.TREE_NODE_TYPE_DIRECTORY: stat.S_IFDIR, backup_pb2.TREE_NODE_TYPE_FILE: stat.S_IFREG,
             backup_pb2.TREE_NODE_TYPE_SYMLINK: stat.S_IFLNK, backup_pb2.TREE_NODE_TYPE_FIFO: stat.S_IFIFO}
TYPE_NAMES = {backup_pb2.TREE_NODE_TYPE_DIRECTORY: "directory", backup_pb2.TREE_NODE_TYPE_FILE: "file",
              backup_pb2.TREE_NODE_TYPE_SYMLINK: "symlink", backup_pb2.TREE_NODE_TYPE_FIFO: "fifo"}


def register(groups, common) -> None:
    commands = add_group(groups, "backup")  # backups.py's group: these verbs join it

    parser = add_command(commands, "ls", list_files, common,
                         "list a directory of a file-system backup (or the one entry a path names), like ls -l")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("path", nargs="?", default="/", metavar="PATH", help="in the backed-up tree (default: /)")

    parser = add_command(commands, "dump", dump, common,
                         "write one file of a file-system backup (or a disk backup's whole image) to stdout")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="a regular file in the backed-up tree; leave out for a disk backup's image")

    parser = add_command(commands, "mount", mount, common,
                         "show a backup as a read-only file system at DIR until Ctrl-C, SIGTERM or `fusermount -u "
                         "DIR`: a disk backup as disk.img (a server backup: <device>.img each), to loop-mount; a "
                         "file-system backup as its tree")
    parser.add_argument("backup_id", type=BACKUP_ID, metavar="BACKUP_ID")
    parser.add_argument("directory", metavar="DIR", help="an empty directory")
    parser.add_argument("--cache", type=count, default=32, metavar="MIB",
                        help="MiB of recently read data kept (default 32)")


def _path(text: str) -> bytes:
    return os.fsencode(text)  # names need not be UTF-8: argv keeps their bytes (surrogateescape)


async def list_files(args, client: CbrClient, out: Output) -> None:
    nodes = []
    async for reply in client.backups.ListBackupTree(backup_pb2.ListBackupTreeRequest(
            backup_id=args.backup_id, path=_path(args.path)), timeout=None):
        nodes.extend(reply.entries)
    if args.json:
        out.json({"items": [_node_dict(node) for node in nodes], "count": len(nodes)})
        return
    for node in nodes:
        print(_node_line(node))
    sys.stdout.flush()


def _node_dict(node: backup_pb2.TreeNode) -> dict:
    found = {"name": os.fsdecode(node.name), "type": TYPE_NAMES.get(node.type, "unknown"), "size": node.size,
             "mode": f"{node.mode:04o}", "uid": node.uid, "gid": node.gid,
             "mtime": _time(node.mtime_ns).isoformat()}
    if node.link_target:
        found["link_target"] = os.fsdecode(node.link_target)
    if node.hard_link_of:
        found["hard_link_of"] = os.fsdecode(node.hard_link_of)
    return found


def _node_line(node: backup_pb2.TreeNode) -> str:
    name = os.fsdecode(node.name).encode("utf-8", "backslashreplace").decode()  # a terminal gets printable text
    if node.link_target:
        name += " -> " + os.fsdecode(node.link_target).encode("utf-8", "backslashreplace").decode()
    mode = stat.filemode(TYPE_BITS.get(node.type, 0) | node.mode)
    when = _time(node.mtime_ns).astimezone().strftime("%Y-%m-%d %H:%M")
    return f"{mode} {node.uid:>5} {node.gid:>5} {node.size:>12} {when} {name}"


def _time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)


async def dump(args, client: CbrClient, out: Output) -> None:
    """Streams to stdout. Into a regular file, holes are skipped with a seek, so the file stays sparse."""
    target = sys.stdout.buffer
    if os.isatty(target.fileno()):
        raise UsageError("stdout is a terminal: redirect it to a file (> FILE) or a pipe")
    fd = target.fileno()
    sparse = stat.S_ISREG(os.fstat(fd).st_mode) and os.lseek(fd, 0, os.SEEK_CUR) == 0
    if args.path is None:
        stream = client.backups.GetBackupImageRange(backup_pb2.GetBackupImageRangeRequest(
            backup_id=args.backup_id, holes=sparse), timeout=None)
    else:
        stream = client.backups.GetBackupFile(backup_pb2.GetBackupFileRequest(
            backup_id=args.backup_id, path=_path(args.path), holes=sparse), timeout=None)
    size = 0
    async for piece in stream:
        size = piece.size
        if piece.hole_bytes:
            os.lseek(fd, piece.offset + piece.hole_bytes, os.SEEK_SET)
        elif piece.data:
            view = memoryview(piece.data)
            while view:
                view = view[os.write(fd, view):]
    if sparse:
        os.ftruncate(fd, size)  # a hole at the end is only a seek: the size says where the file ends


async def mount(args, client: CbrClient, out: Output) -> int:
    """Runs libfuse in this thread until unmounted; its callbacks (on libfuse's threads) make synchronous calls."""
    from cbr_cli import backup_mount

    directory = os.path.abspath(args.directory)
    if not os.path.isdir(directory):
        raise UsageError(f"{args.directory} is not a directory")
    if os.listdir(directory):
        raise UsageError(f"{args.directory} is not empty: mount on an empty directory")
    try:
        backup_mount._operations_base()
    except OSError as exc:
        out.error(f"FUSE is not available here ({exc}): install libfuse2 (Debian: apt-get install fuse)")
        return exit_codes.OTHER
    config = load_config(os.environ, args.env_file, timeout=args.timeout)
    backups = backup_mount.Backups(config)
    try:
        backup = backups.get(args.backup_id)
        fs = backup_mount.make_file_system(
            backups, backup, max(1, args.cache * (1 << 20) // backup_mount.WINDOW),
            on_ready=lambda: out.note(f"backup {args.backup_id} mounted read-only at {directory}"
                                      f"{' as disk.img' if backup.resource_type == common_pb2.OBJECT_TYPE_DISK else ''}"
                                      f"; Ctrl-C, SIGTERM or `fusermount -u {directory}` unmounts it"),
            on_error=lambda error: out.error(f"reading the backup: {describe(error)}"))
    except grpc.RpcError as error:
        out.error(describe(error, args.fields))
        return exit_codes.for_status(error.code())
    try:
        # libfuse installs its handlers only where the default one is in place; they end the loop and unmount.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        backup_mount.mount(fs, directory, args.backup_id)
    except RuntimeError as exc:
        out.error(f"mounting at {directory} failed ({exc}); as a user other than root this needs fusermount "
                  f"(Debian: apt-get install fuse)")
        return exit_codes.OTHER
    finally:
        backups.channel.close()
    return exit_codes.OK

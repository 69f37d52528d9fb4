"""The read calls' messages (DESIGN.md 18): pieces of data and tree entries."""
from __future__ import annotations

from collections.abc import AsyncIterator

from cbr.backup.v1 import backup_pb2
from cbr_backup.datapath.backup_reads import TreeView
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry, split_path
from cbr_backup.service.backup_reads import Read

NODE_TYPES = {EntryKind.DIRECTORY: backup_pb2.TREE_NODE_TYPE_DIRECTORY, EntryKind.FILE: backup_pb2.TREE_NODE_TYPE_FILE,
              EntryKind.HARDLINK: backup_pb2.TREE_NODE_TYPE_FILE, EntryKind.SYMLINK: backup_pb2.TREE_NODE_TYPE_SYMLINK,
              EntryKind.FIFO: backup_pb2.TREE_NODE_TYPE_FIFO}


async def data_out(read: Read) -> AsyncIterator[backup_pb2.BackupData]:
    """The pieces as messages; an empty range still gets one message, which tells the size."""
    sent = False
    async for piece in read.pieces:
        sent = True
        yield backup_pb2.BackupData(offset=piece.offset, data=piece.data, hole_bytes=piece.hole, size=read.size)
    if not sent:
        yield backup_pb2.BackupData(size=read.size)


def node_out(view: TreeView, entry: TreeEntry) -> backup_pb2.TreeNode:
    """A hard link shows as the file it names (its size, mode and times), with that file's path."""
    meta = view.file_of(entry)
    return backup_pb2.TreeNode(
        name=split_path(entry.path)[1], type=NODE_TYPES[entry.kind], size=meta.size, mode=meta.mode,
        mtime_ns=meta.mtime_ns, link_target=entry.target if entry.kind == EntryKind.SYMLINK else b"",
        uid=meta.uid, gid=meta.gid, hard_link_of=entry.target if entry.kind == EntryKind.HARDLINK else b"")

"""Reads out of a backup for a caller (DESIGN.md 18): a disk image's byte range, a tree's entries, one file's bytes.

Everything about the request is checked (the backup in the caller's project, its kind and status, the path, the
range) before the first chunk is read. The data path work runs on threads, a batch at a time, so the event loop
keeps serving while a long read streams. While a read runs it holds the vault's lock shared on an index connection
of its own, as a restore does: GC's repack never moves a chunk between its lookup and its read.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.datapath import ManifestCorruptError, VaultKeys
from cbr_backup.datapath.backup_reads import Piece, TreeView, file_range, image_range
from cbr_backup.datapath.chunk_codec import ChunkCodec
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry
from cbr_backup.domain import errors, rules
from cbr_backup.domain.backup_reads import check_image_readable, check_range, check_tree_readable, tree_path
from cbr_backup.domain.backups import Backup
from cbr_backup.keys import KeyProvider
from cbr_backup.service.vault_keys import open_vault_keys
from cbr_backup.worker import manifests

MakeUow = Callable[[], BackupUnitOfWork]
LISTING_BATCH = 1000      # tree entries per ListBackupTree message
MANIFESTS_KEPT = 8        # decoded manifests kept: a mount reads one backup in many small calls
IDLE_INDEXES = 4          # index connections kept open between reads


class BackupReader:
    """The service's means to read backups: the chunk store, the KEK, index connections and a few decoded manifests.
    Keys are unwrapped per call and never kept."""

    def __init__(self, key_provider: KeyProvider, make_store: Callable[[], object], open_index: Callable[[], object]):
        self.key_provider = key_provider
        self._make_store = make_store
        self._open_index = open_index
        self._store = None
        self._lock = threading.Lock()
        self._manifests: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._idle: list = []

    @property
    def store(self):
        with self._lock:
            if self._store is None:
                self._store = self._make_store()
            return self._store

    def manifest(self, keys: VaultKeys, backup: Backup):
        """The backup's manifest (a tree's as a TreeView), decoded and checked once, then kept a while."""
        key = (backup.vault_id, backup.namespace_id, backup.manifest_id)
        with self._lock:
            if key in self._manifests:
                self._manifests.move_to_end(key)
                return self._manifests[key]
        found = manifests.load(self.store, keys, backup)
        if backup.manifest_kind == "tree":
            found = TreeView(found)
        with self._lock:
            self._manifests[key] = found
            while len(self._manifests) > MANIFESTS_KEPT:
                self._manifests.popitem(last=False)
        return found

    @contextlib.contextmanager
    def chunks(self, keys: VaultKeys, vault_id: str) -> Iterator[ChunkSource]:
        """A ChunkSource of the vault, on an index connection that holds the vault's lock shared meanwhile."""
        with self._lock:
            index = self._idle.pop() if self._idle else None
        if index is None:
            index = self._open_index()
        reusable = False
        try:
            index.lock_vault(vault_id, False)
            try:
                codec = ChunkCodec(keys, dictionaries=VaultDictionaries(self.store, vault_id, keys).by_tag)
                yield ChunkSource(self.store, codec, vault_id, index)
            finally:
                reusable = index.unlock_vault(vault_id, False)
        finally:
            with self._lock:
                if reusable and len(self._idle) < IDLE_INDEXES:
                    self._idle.append(index)
                    index = None
            if index is not None:
                index.close()

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for index in idle:
            await asyncio.to_thread(index.close)


@dataclass(frozen=True)
class Read:
    """A read, checked: its size and the pieces to stream."""
    size: int
    pieces: AsyncIterator[Piece]


async def read_image(project_id: str, backup_id: str, offset: int, length: int, holes: bool, make_uow: MakeUow,
                     reader: BackupReader) -> Read:
    backup = check_image_readable(await _backup(make_uow, project_id, backup_id))
    keys = await backup_keys(make_uow, reader.key_provider, backup)
    manifest = await asyncio.to_thread(reader.manifest, keys, backup)
    offset, length = check_range(offset, length, manifest.disk_size)
    return Read(manifest.disk_size, _stream(reader, keys, backup.vault_id,
                                            lambda source: image_range(manifest, source, offset, length, holes)))


async def read_file(project_id: str, backup_id: str, path: bytes, offset: int, length: int, holes: bool,
                    make_uow: MakeUow, reader: BackupReader) -> Read:
    path = tree_path(path)
    view, keys, backup = await _tree(make_uow, reader, project_id, backup_id)
    entry = _entry(view, path)
    if entry.kind not in (EntryKind.FILE, EntryKind.HARDLINK):
        raise errors.NotAFileError(f"{_shown(path)} is a {entry.kind.name.lower()}, not a regular file")
    entry = view.file_of(entry)
    offset, length = check_range(offset, length, entry.size)
    return Read(entry.size, _stream(reader, keys, backup.vault_id,
                                    lambda source: file_range(entry, source, offset, length, holes)))


async def list_tree(project_id: str, backup_id: str, path: bytes, make_uow: MakeUow,
                    reader: BackupReader) -> tuple[TreeView, list[TreeEntry]]:
    """The entries at path (a directory's, or the one non-directory); hard links come as they are: view.file_of()
    gives their file."""
    path = tree_path(path)
    view, _, _ = await _tree(make_uow, reader, project_id, backup_id)
    _entry(view, path)
    return view, view.listing(path)


async def check_restore_paths(project_id: str, backup_id: str, paths: tuple[bytes, ...], make_uow: MakeUow,
                              reader: BackupReader) -> None:
    """Every path of a selective restore exists in the file-system backup (checked before the task is made)."""
    view, _, _ = await _tree(make_uow, reader, project_id, backup_id)
    for path in paths:
        _entry(view, path)


async def backup_keys(make_uow: MakeUow, key_provider: KeyProvider, backup: Backup) -> VaultKeys:
    """The keys the backup's chunks are read with: its vault's, or for a replica its namespace's id key with the
    vault's data key (DESIGN.md 17.3), as a restore job opens them."""
    async with make_uow() as uow:
        keys = await open_vault_keys(uow, key_provider, backup.vault_id, True)
        if backup.namespace_id:
            from cbr_backup.transfer.namespaces import open_namespace_keys
            found = await open_namespace_keys(uow, key_provider, keys, backup.vault_id, backup.namespace_id)
            if found is None:
                raise ManifestCorruptError(
                    f"replica {backup.backup_id}: its namespace {backup.namespace_id} has no key")
            keys = found
        await uow.commit()
    return keys


async def _backup(make_uow: MakeUow, project_id: str, backup_id: str) -> Backup:
    backup_id = rules.check_id(backup_id, "backup_id")
    async with make_uow() as uow:
        backup = await uow.backups.get_backup(project_id, backup_id)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {backup_id} not found")
    return backup


async def _tree(make_uow: MakeUow, reader: BackupReader, project_id: str, backup_id: str):
    backup = check_tree_readable(await _backup(make_uow, project_id, backup_id))
    keys = await backup_keys(make_uow, reader.key_provider, backup)
    view = await asyncio.to_thread(reader.manifest, keys, backup)
    return view, keys, backup


def _entry(view: TreeView, path: bytes) -> TreeEntry:
    entry = view.entry(path)
    if entry is None:
        raise errors.TreePathNotFoundError(f"{_shown(path)} is not in the backup")
    return entry


def _shown(path: bytes) -> str:
    return repr("/" + path.decode("utf-8", "backslashreplace"))[:300]


async def _stream(reader: BackupReader, keys: VaultKeys, vault_id: str, pieces) -> AsyncIterator[Piece]:
    """Runs the data path's piece iterator on a thread, a piece at a time, inside reader.chunks(). A caller that
    goes away mid-read cancels this generator; the step running on a thread is waited for before the index
    connection (and its hold of the vault lock) is released, so no thread outlives the read's connection."""
    loop = asyncio.get_running_loop()
    stack = contextlib.ExitStack()
    step = None
    try:
        step = loop.run_in_executor(None, stack.enter_context, reader.chunks(keys, vault_id))
        source = await asyncio.shield(step)
        it = pieces(source)
        while True:
            step = loop.run_in_executor(None, next, it, None)
            piece = await asyncio.shield(step)
            step = None
            if piece is None:
                break
            yield piece
    finally:
        if step is not None:
            with contextlib.suppress(BaseException):
                await step
        await asyncio.to_thread(stack.close)

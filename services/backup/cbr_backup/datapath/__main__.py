"""Command line for the disk data path (used by bench/ and by hand). Prints one JSON line.

    python -m cbr_backup.datapath backup --disk PATH --store DIR --database-url URL --vault-id UUID
        --key-file FILE [--parent-manifest ID] [--block-size BYTES] [--workers N]
        [--snapshot-dir DIR [--keep-snapshot] [--previous-snapshot PATH]]
      -> {"manifest_id", "logical_bytes", "read_bytes", "new_chunks", "stored_bytes_added", "seconds"}
    python -m cbr_backup.datapath restore --manifest-id ID --store DIR --database-url URL --vault-id UUID
        --key-file FILE --target PATH [--in-place] [--workers N]
      -> {"written_bytes", "seconds", ...}

--disk is read as it is (it must not change during the backup) unless --snapshot-dir is given: then the disk
is snapshotted there first (reflink clone or sparse copy) and the snapshot is backed up. The key file holds
the vault's 32-byte id key, or 64 bytes: the id key then the data key (an encrypted vault, as the services make
by default); created (32 random bytes) if missing. The store is an FsChunkStore at --store; the
chunk index is the backup.chunks table at --database-url (migrated here if missing). Exit status 1 on
errors, 2 on data loss (missing or corrupt chunks).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

KEY_SIZE = 32


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = _parser().parse_args(argv)
    from cbr_backup.datapath.errors import DataPathError
    from cbr_common.errors import DataLossError
    try:
        summary = _backup(args) if args.command == "backup" else _restore(args)
    except (DataPathError, DataLossError) as exc:
        print(f"data loss: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cbr_backup.datapath", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("backup", "restore"):
        c = sub.add_parser(name)
        c.add_argument("--store", required=True, type=Path, help="FsChunkStore root folder")
        c.add_argument("--database-url", required=True, help="Postgres URL holding backup.chunks")
        c.add_argument("--vault-id", required=True, help="vault UUID (the store's key namespace)")
        c.add_argument("--key-file", required=True, type=Path, help="the vault's 32-byte id key (made if missing)")
        c.add_argument("--workers", type=int, default=None, help="thread pool size (default: 2-4 by cores)")
        if name == "backup":
            c.add_argument("--disk", required=True, type=Path)
            c.add_argument("--parent-manifest", default=None, help="manifest id of the previous backup")
            c.add_argument("--block-size", type=int, default=None,
                           help="bytes per block (default: the parent's, else 1 MiB)")
            c.add_argument("--snapshot-dir", type=Path, default=None, help="snapshot the disk here first")
            c.add_argument("--keep-snapshot", action="store_true", help="keep the snapshot (for the next run)")
            c.add_argument("--previous-snapshot", type=Path, default=None,
                           help="the parent's kept snapshot (reflink file systems: shared extents are not read)")
        else:
            c.add_argument("--manifest-id", required=True)
            c.add_argument("--target", required=True, type=Path)
            c.add_argument("--in-place", action="store_true", help="write only blocks that differ in target")
    return p


def _vault(args):
    uuid.UUID(args.vault_id)  # the namespace of every store key: refuse anything else
    from cbr_backup.chunkstore import FsChunkStore
    from cbr_backup.datapath.chunk_codec import VaultKeys
    key = _read_or_create_key(args.key_file)
    return VaultKeys(key[:KEY_SIZE], key[KEY_SIZE:] or None), FsChunkStore(args.store.absolute())


def _read_or_create_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) not in (KEY_SIZE, 2 * KEY_SIZE):
            raise ValueError(f"{path} must hold {KEY_SIZE} or {2 * KEY_SIZE} bytes, it has {len(key)}")
        return key
    key = os.urandom(KEY_SIZE)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class _IndexWhenReady:
    """The chunk index, connected on a side thread (psycopg's import and the connection overlap the
    backup's start); each call waits for it."""

    def __init__(self, database_url: str):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cbr-index-connect")
        self._future: Future = self._executor.submit(_connect_index, database_url)

    def __getattr__(self, name):
        return getattr(self._future.result(), name)

    def close(self) -> None:
        try:
            index = self._future.result()
        except Exception:  # the connection failed: whoever used the index has seen the error already
            index = None
        if index is not None:
            index.close()
        self._executor.shutdown()


def _connect_index(database_url: str):
    from cbr_backup.adapters.chunk_index import ChunkIndex, libpq_url
    import psycopg
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        missing = conn.execute(  # no table, or one from before packs (migration backup_0007)
            "SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'backup'"
            " AND table_name = 'chunks' AND column_name = 'pack_id')").fetchone()[0]
    if missing:
        from cbr_common.migrations import upgrade
        upgrade(database_url if "+psycopg" in database_url else
                database_url.replace("postgresql://", "postgresql+psycopg://", 1), "cbr_backup")
    return ChunkIndex(database_url)


def _backup(args) -> dict:
    index = _IndexWhenReady(args.database_url)
    try:
        keys, store = _vault(args)
        from cbr_backup.datapath.disk_backup import backup_disk, load_manifest
        parent = load_manifest(store, keys, args.vault_id, args.parent_manifest) if args.parent_manifest else None
        manifest_id = str(uuid.uuid4())
        source, snapshot = args.disk, None
        if args.snapshot_dir is not None:
            from cbr_backup.datapath.snapshot import take_snapshot
            args.snapshot_dir.mkdir(parents=True, exist_ok=True)
            snapshot = take_snapshot(args.disk, args.snapshot_dir / f"{manifest_id}.snap")
            source = snapshot.path
        try:
            result = backup_disk(source, keys, store, index, args.vault_id, parent=parent,
                                 block_size=args.block_size or None, manifest_id=manifest_id,
                                 started_time=dt.datetime.now(dt.timezone.utc), workers=args.workers,
                                 previous_snapshot=args.previous_snapshot
                                 if snapshot is not None and snapshot.reflinked else None)
        finally:
            if snapshot is not None and not args.keep_snapshot:
                snapshot.release()
        summary = result.summary()
        if snapshot is not None and args.keep_snapshot:
            summary["snapshot"] = snapshot.path
        return summary
    finally:
        index.close()


def _restore(args) -> dict:
    # The chunk index says which pack holds each chunk the manifest names (DESIGN.md 13.3).
    index = _IndexWhenReady(args.database_url)
    try:
        keys, store = _vault(args)
        from cbr_backup.datapath.disk_backup import load_manifest
        from cbr_backup.datapath.disk_restore import restore_in_place, restore_to_new_disk
        manifest = load_manifest(store, keys, args.vault_id, args.manifest_id)
        restore = restore_in_place if args.in_place else restore_to_new_disk
        return restore(manifest, store, keys, args.vault_id, args.target, workers=args.workers,
                       index=index).summary()
    finally:
        index.close()


if __name__ == "__main__":
    sys.exit(main())

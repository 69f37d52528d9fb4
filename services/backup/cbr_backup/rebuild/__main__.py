"""Rebuilds a vault's rows from its store: `python -m cbr_backup.rebuild --vault-id V [--project-id P]`.

Reads CBR_DATABASE_URL, CBR_KEK_FILE (the key provider) and the store the workers use (CBR_STORE_URL, else
CBR_STORE_DIR). Restores the vault's keys row from the store's keys object, the chunk index from the pack trailers
(and lone chunk files of vaults from before packs), and the backups (available) and their checkpoints from the
backup records (DESIGN.md 14.3). Refuses when the vault has rows already, unless --add-missing: then only what is
missing is added, so running it again is harmless. Run it while no job of the vault runs (it takes the vault's
lock and refuses if it cannot).

--backfill-records goes the other way, for backups made before the store kept records: from the vault's rows it
writes the keys object and a record for every available backup that has none. Run it once per vault from before.

Exit status: 0 done, 1 error, 3 refused.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from cbr_backup.keys import KeyUnwrapError, unwrap_vault_keys
from cbr_backup.rebuild import RebuildRefused, RebuildSummary, existing_rows, read_store, write_rows
from cbr_common.errors import DataLossError
from cbr_common.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbr_backup.rebuild", description=__doc__.split("\n")[0])
    parser.add_argument("--vault-id", required=True)
    parser.add_argument("--project-id", default="", help="refuse records of any other project")
    parser.add_argument("--add-missing", action="store_true",
                        help="the vault has rows already: add only what the store has and they lack")
    parser.add_argument("--backfill-records", action="store_true",
                        help="write the store's records of the vault's backups from its rows (backups from before)")
    args = parser.parse_args(argv)
    if args.backfill_records:
        try:
            written, had = asyncio.run(backfill(_settings(), args.vault_id))
        except RebuildRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 3
        except (SettingsError, KeyUnwrapError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"vault {args.vault_id}: wrote the records of {written} backups ({had} had them already)")
        return 0
    try:
        summary = asyncio.run(rebuild(_settings(), args.vault_id, args.project_id, args.add_missing))
    except RebuildRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except (SettingsError, KeyUnwrapError, DataLossError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines(args.vault_id)))
    return 0


async def rebuild(settings: Settings, vault_id: str, project_id: str = "", add_missing: bool = False
                  ) -> RebuildSummary:
    from cbr_backup.adapters.chunk_index import ChunkIndex
    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.keys import key_provider
    from cbr_backup.service.lifecycle import publish_usage
    from cbr_backup.worker.main import chunk_store
    from cbr_common.db import Database

    provider, store = key_provider(settings), chunk_store(settings)
    db = Database(settings.database_url, metadata.schema, pool_size=1, statement_timeout=600.0)
    index = await asyncio.to_thread(ChunkIndex, settings.database_url)
    try:
        if not await asyncio.to_thread(index.lock_vault, vault_id, True, False):
            raise RebuildRefused(f"a job of vault {vault_id} is running (it holds the vault's lock); stop the "
                                 f"workers or wait, then run this again")
        async with BackupUnitOfWork(db) as uow:
            counts = await existing_rows(uow, vault_id)
        if any(counts.values()) and not add_missing:
            held = ", ".join(f"{n} in {table}" for table, n in counts.items() if n)
            raise RebuildRefused(f"vault {vault_id} has rows already ({held}); use --add-missing to add only what "
                                 f"the store has and they lack")
        contents = await asyncio.to_thread(read_store, store, provider, vault_id, project_id)
        async with BackupUnitOfWork(db) as uow:
            row = await uow.backups.vault_keys(vault_id, for_update=True)
            if row is not None and _id_key(provider, vault_id, row) != contents.keys.id_key:
                raise RebuildRefused(f"vault {vault_id} has a keys row whose keys are not the store's")
            await write_rows(uow, index, contents, vault_id)
            project = contents.keys_object.project_id or (contents.backups[0].project_id if contents.backups else "")
            if project:
                await publish_usage(uow, project, vault_id)  # the vault service learns the rebuilt usage
            await uow.commit()
    finally:
        await asyncio.to_thread(index.close)  # also drops the vault's lock
        await db.close()
    return RebuildSummary(
        backups=len(contents.backups), top_level=sum(1 for b in contents.backups if not b.parent_id),
        checkpoints=len(contents.checkpoints), chunks=len(contents.chunk_rows), packs=contents.packs,
        lone_chunks=contents.lone_chunks, records=contents.records, skipped=tuple(contents.skipped),
        corrupt=tuple(b.backup_id for b in contents.backups if b.corrupt),
        kek_id=contents.keys_object.wrapped.kek_id, encrypted=contents.keys_object.encrypted,
        namespaces=len(contents.namespaces))


async def backfill(settings: Settings, vault_id: str) -> tuple[int, int]:
    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.keys import key_provider
    from cbr_backup.rebuild import backfill_records
    from cbr_backup.worker.main import chunk_store
    from cbr_common.db import Database

    provider, store = key_provider(settings), chunk_store(settings)
    db = Database(settings.database_url, metadata.schema, pool_size=1, statement_timeout=600.0)
    try:
        async with BackupUnitOfWork(db) as uow:
            return await backfill_records(uow, store, provider, vault_id)
    finally:
        await db.close()


def _id_key(provider, vault_id: str, row) -> bytes:
    return row if isinstance(row, bytes) else unwrap_vault_keys(provider, vault_id, row).id_key


def _settings() -> Settings:
    """Only what the rebuild needs: the database, the key provider and the workers' store."""
    def required(name: str) -> str:
        value = os.environ.get(name, "").strip()
        if not value:
            raise SettingsError(f"missing required setting {name}")
        return value

    return Settings(service="backup", database_url=required("CBR_DATABASE_URL"), nats_url="", jwt_secret="",
                    store_dir=os.environ.get("CBR_STORE_DIR", ""), store_url=os.environ.get("CBR_STORE_URL", ""),
                    kek_file=required("CBR_KEK_FILE"))


if __name__ == "__main__":
    sys.exit(main())

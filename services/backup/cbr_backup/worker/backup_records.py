"""The backup job's last store writes: the vault's keys object and a record per manifest (DESIGN.md 14), made
durable inside the final transaction, before its commit makes the backup available."""
from __future__ import annotations

import asyncio

from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.datapath import records
from cbr_backup.datapath.chunk_codec import VaultKeys
from cbr_backup.keys.vault_keys import WrappedVaultKeys


async def write_backup_records(uow: BackupUnitOfWork, store, keys: VaultKeys, run_id: str, project_id: str,
                               backup_id: str) -> None:
    """Reads the backup's rows as this transaction has just set them (available, sizes, manifests) and writes
    them to the store. A failure here rolls the transaction back: the backup does not become available."""
    backup = await uow.backups.get_backup(project_id, backup_id)
    wrapped = await uow.backups.vault_keys(backup.vault_id)
    if not isinstance(wrapped, WrappedVaultKeys):  # the job's keys() wrapped any clear row before it ran
        raise RuntimeError(f"vault {backup.vault_id} has no wrapped keys row")
    cp = await uow.backups.get_checkpoint(project_id, backup.checkpoint_id)
    checkpoint = records.checkpoint_fields(cp) if cp is not None else {}
    made = records.records_for(backup, checkpoint, run_id)
    keys_object = records.KeysObject(backup.vault_id, project_id, wrapped)
    await asyncio.to_thread(records.write_records, store, keys, backup.vault_id, keys_object, made)

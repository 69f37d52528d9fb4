"""A vault's keys through their life: made wrapped when the vault is first heard of, opened per job, wrapped
anew on a KEK rotation, wrapped where a row from before kept them in the clear (DESIGN.md 12)."""
from __future__ import annotations

from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.datapath.chunk_codec import VaultKeys
from cbr_backup.keys import KeyProvider, WrappedVaultKeys, new_vault_keys, unwrap_vault_keys, wrap_vault_keys


async def create_vault_keys(uow: BackupUnitOfWork, provider: KeyProvider, vault_id: str, encrypted: bool) -> None:
    """New random keys for the vault (the data key only if encrypted), wrapped; keys it has already stay."""
    if await uow.backups.vault_keys(vault_id) is None:
        await uow.backups.add_vault_keys(vault_id, wrap_vault_keys(provider, vault_id, new_vault_keys(encrypted)))


async def open_vault_keys(uow: BackupUnitOfWork, provider: KeyProvider, vault_id: str,
                          encrypted: bool) -> VaultKeys:
    """The vault's keys, unwrapped for one job. Made here if the vault has none yet (its VaultCreated event not
    handled yet, or a vault from before encryption with no backup: `encrypted` is what the vault says); a clear
    row from before is wrapped on the way (its data stays unencrypted)."""
    stored = await uow.backups.vault_keys(vault_id, for_update=True)
    if stored is None:
        await create_vault_keys(uow, provider, vault_id, encrypted)
        stored = await uow.backups.vault_keys(vault_id)
    if isinstance(stored, bytes):
        keys = VaultKeys(stored)
        await uow.backups.replace_vault_keys(vault_id, wrap_vault_keys(provider, vault_id, keys))
        return keys
    return unwrap_vault_keys(provider, vault_id, stored)


async def wrap_clear_keys(uow: BackupUnitOfWork, provider: KeyProvider) -> int:
    """Wraps every id key a row still holds in the clear (vaults from before keys were wrapped); how many."""
    wrapped = 0
    for vault_id in await uow.backups.vault_ids_with_keys():
        stored = await uow.backups.vault_keys(vault_id, for_update=True)
        if isinstance(stored, bytes):
            await uow.backups.replace_vault_keys(vault_id, wrap_vault_keys(provider, vault_id, VaultKeys(stored)))
            wrapped += 1
    return wrapped


async def rotate_kek(uow: BackupUnitOfWork, old: KeyProvider, new: KeyProvider) -> tuple[int, int]:
    """Re-wraps every vault's keys from the old KEK to the new one (data is not touched); rows the new KEK
    wraps already are skipped, so a rotation cut short runs again. (rewrapped, skipped)."""
    rewrapped = skipped = 0
    for vault_id in await uow.backups.vault_ids_with_keys():
        stored = await uow.backups.vault_keys(vault_id, for_update=True)
        if isinstance(stored, WrappedVaultKeys) and stored.kek_id == new.kek_id:
            skipped += 1
            continue
        keys = VaultKeys(stored) if isinstance(stored, bytes) else unwrap_vault_keys(old, vault_id, stored)
        await uow.backups.replace_vault_keys(vault_id, wrap_vault_keys(new, vault_id, keys))
        rewrapped += 1
    return rewrapped, skipped


async def rotate_namespace_keys(uow: BackupUnitOfWork, old: KeyProvider, new: KeyProvider) -> list[dict]:
    """Re-wraps the replica namespaces' id keys (DESIGN.md 17.3) as rotate_kek does the vaults'; the rows changed
    (their store objects are rewritten from them: transfer.namespaces.put_namespace_object)."""
    from cbr_backup.transfer.namespaces import unwrap_namespace_key, wrap_namespace_key
    from cbr_backup.transfer.repository import TransferRepository

    repo = TransferRepository(uow.session)
    changed = []
    for row in await repo.all_namespaces(for_update=True):
        if row["kek_id"] == new.kek_id:
            continue
        id_key = unwrap_namespace_key(old, row["vault_id"], row["namespace_id"], row["kek_id"],
                                      bytes(row["wrapped_id_key"]))
        kek_id, wrapped = wrap_namespace_key(new, row["vault_id"], row["namespace_id"], id_key)
        await repo.rewrap_namespace(row["vault_id"], row["namespace_id"], kek_id, wrapped)
        changed.append({**row, "kek_id": kek_id, "wrapped_id_key": wrapped})
    return changed


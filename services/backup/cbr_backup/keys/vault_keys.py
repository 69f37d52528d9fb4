"""A vault's keys as the database keeps them: both wrapped by the provider's KEK, bound to the vault and role."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cbr_backup.datapath.chunk_codec import KEY_SIZE, VaultKeys
from cbr_backup.keys.provider import KeyProvider


@dataclass(frozen=True)
class WrappedVaultKeys:
    kek_id: str
    wrapped_id_key: bytes
    wrapped_enc_key: bytes | None  # None: an unencrypted vault (asked for, or made before encryption was default)


def new_vault_keys(encrypted: bool) -> VaultKeys:
    return VaultKeys(os.urandom(KEY_SIZE), os.urandom(KEY_SIZE) if encrypted else None)


def _aad(vault_id: str, role: str) -> bytes:
    # A wrapped key moved to another vault's row, or the id key swapped for the data key, fails to unwrap.
    return f"cbr-vault-key\0{vault_id}\0{role}".encode()


def wrap_vault_keys(provider: KeyProvider, vault_id: str, keys: VaultKeys) -> WrappedVaultKeys:
    kek_id, wrapped_id = provider.wrap(keys.id_key, _aad(vault_id, "id"))
    wrapped_enc = None
    if keys.enc_key is not None:
        enc_kek_id, wrapped_enc = provider.wrap(keys.enc_key, _aad(vault_id, "enc"))
        assert enc_kek_id == kek_id, "the provider changed its KEK between two wraps"
    return WrappedVaultKeys(kek_id, wrapped_id, wrapped_enc)


def unwrap_vault_keys(provider: KeyProvider, vault_id: str, wrapped: WrappedVaultKeys) -> VaultKeys:
    id_key = provider.unwrap(wrapped.kek_id, wrapped.wrapped_id_key, _aad(vault_id, "id"))
    enc_key = None
    if wrapped.wrapped_enc_key is not None:
        enc_key = provider.unwrap(wrapped.kek_id, wrapped.wrapped_enc_key, _aad(vault_id, "enc"))
    return VaultKeys(id_key, enc_key)

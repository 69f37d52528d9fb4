"""Vault keys: the key provider that wraps them (provider.py) and how they are made and opened (vault_keys.py)."""
from cbr_backup.keys.provider import (KeyFileProvider, KeyProvider, KeyUnwrapError, create_kek_file, key_provider,
                                      read_kek_file)
from cbr_backup.keys.vault_keys import WrappedVaultKeys, new_vault_keys, unwrap_vault_keys, wrap_vault_keys

__all__ = ["KeyFileProvider", "KeyProvider", "KeyUnwrapError", "WrappedVaultKeys", "create_kek_file",
           "key_provider", "new_vault_keys", "read_kek_file", "unwrap_vault_keys", "wrap_vault_keys"]

"""A replica namespace's keys (DESIGN.md 17.3): the source vault's id key, wrapped by this region's KEK, and the
keys a replica's chunks are read and written with (the namespace's id key, the replication vault's data key)."""
from __future__ import annotations

from dataclasses import dataclass

from cbr_backup.datapath.chunk_codec import VaultKeys
from cbr_backup.keys import KeyProvider


@dataclass(frozen=True)
class NamespaceKeys(VaultKeys):
    """VaultKeys whose id key is a namespace's: its dictionaries live under <vault>/ns/<namespace_id>/dicts/."""
    namespace_id: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"NamespaceKeys({self.namespace_id}, encrypted={self.enc_key is not None})"


def namespace_aad(vault_id: str, namespace_id: str) -> bytes:
    # Bound to the vault and namespace like a vault key to its vault and role (DESIGN.md 12).
    return f"cbr-vault-key\0{vault_id}\0ns:{namespace_id}".encode()


def wrap_namespace_key(provider: KeyProvider, vault_id: str, namespace_id: str, id_key: bytes) -> tuple[str, bytes]:
    return provider.wrap(id_key, namespace_aad(vault_id, namespace_id))


def unwrap_namespace_key(provider: KeyProvider, vault_id: str, namespace_id: str, kek_id: str,
                         wrapped: bytes) -> bytes:
    return provider.unwrap(kek_id, wrapped, namespace_aad(vault_id, namespace_id))


def namespace_keys(vault_keys: VaultKeys, namespace_id: str, id_key: bytes) -> NamespaceKeys:
    return NamespaceKeys(id_key, vault_keys.enc_key, namespace_id)


def staging_prefix(vault_id: str, transfer_id: str) -> str:
    return f"{vault_id}/staging/{transfer_id}/"


def staging_key(vault_id: str, transfer_id: str, source_backup_id: str) -> str:
    # Never under <vault>/manifests/ before commit: GC's orphan-manifest step would delete it (DESIGN.md 17.5).
    return f"{vault_id}/staging/{transfer_id}/{source_backup_id}"


async def open_namespace_keys(uow, provider: KeyProvider, vault_keys: VaultKeys, vault_id: str,
                              namespace_id: str) -> NamespaceKeys | None:
    """The keys a replica of this namespace is read and written with; None if the namespace has no key here."""
    from cbr_backup.transfer.repository import TransferRepository
    row = await TransferRepository(uow.session).namespace_by_id(vault_id, namespace_id)
    if row is None:
        return None
    id_key = unwrap_namespace_key(provider, vault_id, namespace_id, row["kek_id"], bytes(row["wrapped_id_key"]))
    return namespace_keys(vault_keys, namespace_id, id_key)


async def open_vault_namespaces(uow, provider: KeyProvider, vault_keys: VaultKeys,
                                vault_id: str) -> list[NamespaceKeys]:
    """Every namespace's keys of a replication vault (GC's repack checks their chunks)."""
    from cbr_backup.transfer.repository import TransferRepository
    return [namespace_keys(vault_keys, row["namespace_id"], unwrap_namespace_key(
        provider, vault_id, row["namespace_id"], row["kek_id"], bytes(row["wrapped_id_key"])))
        for row in await TransferRepository(uow.session).namespaces(vault_id)]

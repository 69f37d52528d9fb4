"""A replica namespace's keys (DESIGN.md 17.3): the source vault's id key, wrapped by this region's KEK, and the
keys a replica's chunks are read and written with (the namespace's id key, the replication vault's data key)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cbr_backup.datapath.chunk_codec import VaultKeys
from cbr_backup.datapath.errors import ManifestCorruptError
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


# The namespace's wrapped key in the store, beside the vault's keys object (DESIGN.md 14, 17.3): with the store and
# the KEK alone a rebuild brings the namespace back, and with it every replica of that source vault. One object
# per KEK (named by its hash, as the vault's keys objects are): a rotation writes the new one before it drops
# the old. The key is wrapped, never clear; the object holds nothing the KEK does not protect.

NAMESPACE_MAGIC = b"CBRNSKEY1"
NAMESPACE_FIELDS = ("vault_id", "namespace_id", "source_region", "source_vault_id", "kek_id")


def namespace_objects_prefix(vault_id: str, namespace_id: str = "") -> str:
    return f"{vault_id}/ns/{namespace_id}/key-" if namespace_id else f"{vault_id}/ns/"


def namespace_object_key(vault_id: str, namespace_id: str, kek_id: str) -> str:
    return f"{namespace_objects_prefix(vault_id, namespace_id)}{hashlib.sha256(kek_id.encode()).hexdigest()[:32]}"


def encode_namespace(row: dict) -> bytes:
    body = {name: row[name] for name in NAMESPACE_FIELDS}
    body.update(format="cbr-namespace-key", version=1, wrapped_id_key=bytes(row["wrapped_id_key"]).hex(),
                key_check=bytes(row["key_check"]).hex())
    return NAMESPACE_MAGIC + json.dumps(body, sort_keys=True).encode()


def decode_namespace(data: bytes, key: str = "") -> dict:
    """The namespace's row, checked for form only: whether it is genuine shows when the KEK unwraps it."""
    try:
        if not data.startswith(NAMESPACE_MAGIC):
            raise ValueError("bad magic")
        body = json.loads(data[len(NAMESPACE_MAGIC):])
        if body["format"] != "cbr-namespace-key" or body["version"] != 1:
            raise ValueError("unknown format or version")
        row = {name: str(body[name]) for name in NAMESPACE_FIELDS}
        row.update(wrapped_id_key=bytes.fromhex(body["wrapped_id_key"]), key_check=bytes.fromhex(body["key_check"]))
        return row
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestCorruptError(f"namespace key object {key}: {exc}") from None


def put_namespace_object(store, row: dict) -> bool:
    """The row's object for its KEK, made durable, then the namespace's objects for other KEKs dropped; False when
    it was there already."""
    key = namespace_object_key(row["vault_id"], row["namespace_id"], row["kek_id"])
    if store.exists_many([key]):
        return False
    store.put(key, encode_namespace(row))
    store.flush()
    for other in list(store.iterate(namespace_objects_prefix(row["vault_id"], row["namespace_id"]))):
        if other != key:
            store.delete(other)
    return True


def read_namespace_objects(store, vault_id: str) -> list[dict]:
    """Every namespace object of the vault (a rotation cut short may leave two of one namespace: both listed)."""
    prefix = namespace_objects_prefix(vault_id)
    return [decode_namespace(store.get(key), key) for key in sorted(store.iterate(prefix))
            if key[len(prefix):].split("/", 1)[-1].startswith("key-")]

"""A transfer's staged manifests, read back (DESIGN.md 17.5): the chunks they name make the want-list, the commit's
check and, for GC, the chunks an open transfer relies on."""
from __future__ import annotations

from typing import Iterable

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.errors import ChunkCorruptError, ManifestCorruptError
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.datapath.tree_manifest import TreeManifest
from cbr_backup.transfer.namespaces import staging_key



def load_staged(store, keys: VaultKeys, transfer: dict, staged: list[dict]) -> dict:
    """source backup id -> its decoded manifest (servers' records have none)."""
    codec = ChunkCodec(keys)
    out = {}
    for row in staged:
        if row["kind"] == "server":
            continue
        key = staging_key(transfer["vault_id"], transfer["transfer_id"], row["source_backup_id"])
        data = codec.unseal(store.get(key), key.encode(), key)
        out[row["source_backup_id"]] = (DiskManifest if row["kind"] == "disk" else TreeManifest).decode(data)
    return out


def chunk_sizes_of(manifests: Iterable) -> dict[bytes, int]:
    """id -> raw size of every chunk the manifests name."""
    sizes: dict[bytes, int] = {}
    for manifest in manifests:
        sizes.update(manifest.chunk_sizes())
    return sizes


def staged_chunk_ids(store, keys: VaultKeys, transfer: dict, staged: list[dict]) -> Iterable[bytes]:
    """For GC: the chunks an open transfer's staged manifests name (none if its staging is gone)."""
    try:
        manifests = load_staged(store, keys, transfer, staged)
    except (ChunkNotFoundError, ChunkCorruptError, ManifestCorruptError):
        return []
    return list(chunk_sizes_of(manifests.values()))


def staging_keys(store, vault_id: str) -> dict[str, list[str]]:
    """For GC: transfer id -> its staged keys (listed before the open transfers are read: a transfer that stages
    after this listing is not among them, so its staging is never taken for a stale one)."""
    found: dict[str, list[str]] = {}
    for key in store.iterate(f"{vault_id}/staging/"):
        found.setdefault(key.split("/")[2], []).append(key)
    return found

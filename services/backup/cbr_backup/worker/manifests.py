"""A backup row's manifest, whatever its kind: a disk image's or a file tree's."""
from __future__ import annotations

from cbr_backup.datapath import load_manifest
from cbr_backup.datapath.tree_backup import load_tree_manifest
from cbr_backup.domain.backups import Backup


def load(store, keys, backup: Backup):
    loader = load_tree_manifest if backup.manifest_kind == "tree" else load_manifest
    return loader(store, keys, backup.vault_id, backup.manifest_id)


def chunk_sizes(manifest) -> dict[bytes, int]:
    """id -> raw size of every chunk the manifest (a disk's or a tree's) references."""
    return manifest.chunk_sizes()


def patched_blocks(manifest) -> dict:
    """(block id, patch) -> length of a disk manifest's patched blocks; a tree's has none."""
    return manifest.patched_blocks() if hasattr(manifest, "patched_blocks") else {}

"""The disk data path: snapshot, read, cut, hash, compress and store a disk; restore it byte for byte.

Entry points for the backup service: `backup_disk`, `restore_to_new_disk`, `restore_in_place`
(and `take_snapshot` for providers without snapshots of their own). Formats: services/backup/DESIGN.md.
"""
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys, chunk_id
from cbr_backup.datapath.disk_backup import BackupResult, backup_disk, load_manifest
from cbr_backup.datapath.disk_restore import RestoreResult, restore_in_place, restore_to_new_disk
from cbr_backup.datapath.errors import (ChunkCorruptError, ChunkMissingError, DataPathError, ManifestCorruptError)
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.datapath.snapshot import Snapshot, take_snapshot

__all__ = [
    "BackupResult", "ChunkCodec", "ChunkCorruptError", "ChunkMissingError", "DataPathError", "DiskManifest",
    "ManifestCorruptError", "RestoreResult", "Snapshot", "VaultKeys", "backup_disk", "chunk_id", "load_manifest",
    "restore_in_place", "restore_to_new_disk", "take_snapshot",
]

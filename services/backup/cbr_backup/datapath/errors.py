"""The data path's errors: every way stored data can turn out missing or wrong is a DataLossError.

Codes are the backup service's 65xx range (see cbr_backup.domain.errors): 6580-6589 belong to the data path.
"""
from __future__ import annotations

from cbr_common import errors


class DataPathError(errors.DataLossError):
    """Base of the data path's data-loss errors."""
    cbr_code = "BackupService.6580"


class ChunkMissingError(DataPathError):
    """A chunk a manifest names is not in the chunk store."""
    cbr_code = "BackupService.6581"

    def __init__(self, key: str):
        super().__init__(f"chunk {key} is missing from the chunk store")
        self.key = key


class ChunkCorruptError(DataPathError):
    """A stored chunk does not decode, fails authentication, or decodes to bytes with another id."""
    cbr_code = "BackupService.6582"

    def __init__(self, key: str, reason: str):
        super().__init__(f"chunk {key} is corrupt: {reason}")
        self.key = key
        self.reason = reason


class ManifestCorruptError(DataPathError):
    """A manifest (or a vault's compression dictionary) is missing, truncated, or fails its checksum."""
    cbr_code = "BackupService.6583"

"""Chunk stores: where chunk and manifest bytes live (memory, local file system, S3), behind one interface."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cbr_backup.chunkstore.base import ChunkNotFoundError, ChunkStore, StoreFullError, check_key
from cbr_backup.chunkstore.fs import FsChunkStore
from cbr_backup.chunkstore.memory import MemoryChunkStore

if TYPE_CHECKING:
    from cbr_backup.chunkstore.s3 import S3ChunkStore

__all__ = ["ChunkNotFoundError", "ChunkStore", "FsChunkStore", "MemoryChunkStore", "S3ChunkStore", "StoreFullError",
           "check_key"]


def __getattr__(name: str) -> Any:
    # boto3 takes a while to import; only S3 users pay for it.
    if name == "S3ChunkStore":
        from cbr_backup.chunkstore.s3 import S3ChunkStore

        return S3ChunkStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

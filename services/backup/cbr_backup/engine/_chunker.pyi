"""Type stub of the C binding (cbr_backup/engine/_chunker.c)."""

from typing_extensions import Buffer

MIN_CHUNK_SIZE: int
MAX_CHUNK_SIZE: int

def zero_blocks(buf: Buffer, block_size: int, /) -> bytes: ...
def cdc_cuts(buf: Buffer, min_size: int, avg_size: int, max_size: int, final: bool = False) -> list[int]: ...
def gear_table() -> tuple[int, ...]: ...

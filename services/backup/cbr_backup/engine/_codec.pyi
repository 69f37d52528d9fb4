"""Type stub of the C encoder (cbr_backup/engine/_codec.c)."""

from typing import Sequence

from typing_extensions import Buffer

class Encoder:
    def __init__(self, level: int, *, dictionary: Buffer | None = None, dict_tag: int = 0, window_log: int = 0,
                 hash_log: int = 0, min_match: int = 0, enc_key: bytes | None = None, probe_size: int = 4096,
                 probe_min: int = 16384, probe_limit: int = 3973) -> None: ...
    def encode(self, buf: Buffer, block_size: int, blocks: Sequence[int], digests: Sequence[bytes], /
               ) -> tuple[bytearray, list[int]]: ...

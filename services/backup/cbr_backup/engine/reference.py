"""Slow pure-Python definition of the chunk engine, the test oracle for the C kernel (kernel.h)."""

from __future__ import annotations

MIN_CHUNK_SIZE = 64
MAX_CHUNK_SIZE = 64 << 20

GEAR_SEED = 0x4342522D47454152  # "CBR-GEAR"
MASK_HIGH = 62
MASK_SPAN = 48
_U64 = (1 << 64) - 1


def _splitmix64(seed: int, count: int) -> list[int]:
    values = []
    state = seed
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _U64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
        values.append(z ^ (z >> 31))
    return values


GEAR: tuple[int, ...] = tuple(_splitmix64(GEAR_SEED, 256))


def cdc_mask(bits: int) -> int:
    """`bits` one-bits spread evenly over positions MASK_HIGH down to MASK_HIGH - MASK_SPAN + 1."""
    mask = 0
    for i in range(bits):
        mask |= 1 << (MASK_HIGH - (i * MASK_SPAN) // bits)
    return mask


def check_sizes(min_size: int, avg_size: int, max_size: int) -> None:
    if min_size < MIN_CHUNK_SIZE:
        raise ValueError(f"min_size must be >= {MIN_CHUNK_SIZE}, got {min_size}")
    if not min_size <= avg_size <= max_size:
        raise ValueError(f"need min_size <= avg_size <= max_size, got {min_size}, {avg_size}, {max_size}")
    if max_size > MAX_CHUNK_SIZE:
        raise ValueError(f"max_size must be <= {MAX_CHUNK_SIZE}, got {max_size}")


def cdc_cut(data: bytes, start: int, min_size: int, avg_size: int, max_size: int, final: bool) -> int:
    """Length of the chunk starting at data[start], or 0 if it is not determined yet (see kernel.h)."""
    available = len(data) - start
    if available >= max_size:
        end = max_size
    elif final:
        if available <= min_size:
            return available
        end = available
    else:
        if available < min_size:
            return 0
        end = available
    bits = avg_size.bit_length() - 1  # floor(log2(avg))
    mask_s, mask_l = cdc_mask(bits + 2), cdc_mask(bits - 2)
    fp = 0
    # The first min_size - 1 bytes are skipped; a cut follows byte i at length i + 1.
    for i in range(min_size - 1, end):
        fp = ((fp << 1) + GEAR[data[start + i]]) & _U64
        mask = mask_s if i + 1 < avg_size else mask_l
        if fp & mask == 0:
            return i + 1
    if available >= max_size or final:
        return end
    return 0


def cdc_cuts(buf, min_size: int, avg_size: int, max_size: int, final: bool = False) -> list[int]:
    check_sizes(min_size, avg_size, max_size)
    data = bytes(buf)
    cuts: list[int] = []
    pos = 0
    while pos < len(data):
        length = cdc_cut(data, pos, min_size, avg_size, max_size, final)
        if length == 0:
            break
        pos += length
        cuts.append(pos)
    return cuts


def zero_blocks(buf, block_size: int) -> bytes:
    if block_size <= 0:
        raise ValueError("block_size must be > 0")
    data = bytes(buf)
    return bytes(int(not any(data[pos : pos + block_size])) for pos in range(0, len(data), block_size))

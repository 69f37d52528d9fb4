"""Patched blocks (DESIGN.md 3.1): an incremental backup stores a changed block as the 4 KiB pages that differ
from its base (the parent's whole block at the same place) instead of the whole block; a restore puts the base
back and lays the patch's pages over it, then checks the result against the block's id."""
from __future__ import annotations

import blake3

from cbr_backup.datapath.errors import ChunkCorruptError
from cbr_backup.datapath.manifest import PAGE_SIZE, page_map_size, patched_pages
from cbr_backup.engine import differing_pages

# A block is patched only if at most this share of its pages changed: past it the patch saves little and a
# restore would read the base for nothing.
PATCH_MAX_SHARE = 0.75


def diff_pages(block, base, block_size: int) -> bytes | None:
    """The page map of the pages of block (a short last block too) that differ from base, its earlier content of
    the same length; None if none differ or more than PATCH_MAX_SHARE of them do."""
    pages = -(-len(block) // PAGE_SIZE)
    found, changed = differing_pages(block, base, PAGE_SIZE)
    if changed == 0 or changed > pages * PATCH_MAX_SHARE:
        return None
    return found.ljust(page_map_size(block_size), b"\x00")


def diff_known_pages(block, base_pages: dict[int, bytes], block_size: int) -> bytes | None:
    """diff_pages for a block known to equal its base outside base_pages ({page number: the base's bytes there}):
    a block put together from its parent (DESIGN.md 3.2) compares only the pages that may differ."""
    pages = -(-len(block) // PAGE_SIZE)
    out = bytearray(page_map_size(block_size))
    changed = 0
    for p, old in base_pages.items():
        if bytes(block[p * PAGE_SIZE:p * PAGE_SIZE + len(old)]) != old:
            out[p >> 3] |= 1 << (p & 7)
            changed += 1
    if changed == 0 or changed > pages * PATCH_MAX_SHARE:
        return None
    return bytes(out)


def patch_plaintext(block, pages: bytes) -> bytes:
    """The patch chunk's plaintext: the named pages of block, in order."""
    return b"".join(bytes(block[start:end]) for start, end in patched_pages(pages, len(block)))


def apply_patch(out, at: int, base, patch, pages: bytes, length: int) -> None:
    """Writes the patched block of length bytes into out[at:at + length]: base with the named pages replaced by
    patch's bytes, in order."""
    out[at:at + length] = base
    used = 0
    for start, end in patched_pages(pages, length):
        out[at + start:at + end] = patch[used:used + end - start]
        used += end - start


def check_block(data, block_id: bytes, id_key: bytes) -> None:
    if blake3.blake3(data, key=id_key).digest() != block_id:
        raise ChunkCorruptError(f"patched block {block_id.hex()}", "its base and patch do not make the block")

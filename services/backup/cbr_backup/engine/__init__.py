"""The chunk engine: all-zero block scanning, page comparison and FastCDC content-defined chunking, in C (see kernel.h); two
buffer helpers that keep large copies and allocations of the data path off the GIL; and the Encoder (_codec.c),
which makes the stored values of a batch of blocks (zstd, AES-256-GCM) without the GIL."""

from __future__ import annotations

try:
    from cbr_backup.engine._chunker import (MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, cdc_cuts, copy_into, differing_pages,
                                            unfilled_bytearray, zero_blocks)
    from cbr_backup.engine._codec import Encoder
except ImportError as error:  # no fallback: the pure-Python reference is far too slow for backups
    raise ImportError("the C engine (cbr_backup.engine._chunker, _codec) is missing: run `make engine`") from error

__all__ = ["MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "CdcChunker", "Encoder", "cdc_cuts", "copy_into", "differing_pages",
           "unfilled_bytearray", "zero_blocks"]


class CdcChunker:
    """Cuts a stream fed in pieces into the same chunks `cdc_cuts(whole, ..., final=True)` gives.

    Chunks returned by `feed` are memoryviews into the data just fed (so they stay valid only until
    the caller reuses that buffer) or, for a chunk that began in an earlier feed, into a private copy.
    Between feeds it keeps only the undetermined tail, which is shorter than max_size.
    """

    def __init__(self, min_size: int, avg_size: int, max_size: int) -> None:
        cdc_cuts(b"", min_size, avg_size, max_size)  # validates the sizes the same way as every later call
        self.min_size = min_size
        self.avg_size = avg_size
        self.max_size = max_size
        self._tail = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because their chunk end is not known yet."""
        return len(self._tail)

    def feed(self, data) -> list[memoryview]:
        view = _byte_view(data)
        chunks: list[memoryview] = []
        if self._tail:
            # The open chunk ends within max_size of its start, so tail + that much of data settles it
            # without copying more than max_size bytes.
            take = self.max_size - len(self._tail)
            joined = self._tail + view[:take]
            cuts = cdc_cuts(joined, self.min_size, self.avg_size, self.max_size)
            if not cuts:  # all of data fitted into joined and the chunk is still open
                self._tail = joined
                return chunks
            joined_view = memoryview(joined)
            start = 0
            for end in cuts:
                chunks.append(joined_view[start:end])
                start = end
            view = view[start - len(self._tail) :]
            self._tail = b""
        start = 0
        for end in cdc_cuts(view, self.min_size, self.avg_size, self.max_size):
            chunks.append(view[start:end])
            start = end
        self._tail = bytes(view[start:])
        return chunks

    def finish(self) -> list[memoryview]:
        """The chunks left at the end of the stream; the chunker is then ready for a new stream."""
        tail, self._tail = self._tail, b""
        view = memoryview(tail)
        chunks = []
        start = 0
        for end in cdc_cuts(tail, self.min_size, self.avg_size, self.max_size, final=True):
            chunks.append(view[start:end])
            start = end
        return chunks


def _byte_view(data) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view

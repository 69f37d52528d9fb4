"""The chunker race: CBR's C FastCDC (cbr_backup.engine.cdc_cuts) against pyfastcdc on one in-memory buffer.

Both get the same min / average / max sizes and the same bytes; each is timed best of N, and only the cutting is
timed (pyfastcdc's chunk objects are consumed and dropped, as a reader of cut points would).
"""

from __future__ import annotations

import random
import time
from typing import Callable

MIN_SIZE, AVG_SIZE, MAX_SIZE = 16 * 1024, 64 * 1024, 256 * 1024
MB = 1 << 20


def pyfastcdc_cutter(min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE, max_size: int = MAX_SIZE) -> Callable:
    from pyfastcdc import FastCDC
    cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, normalized_chunking=1)

    def cut(buf) -> int:
        count = 0
        for _ in cdc.cut_buf(buf):
            count += 1
        return count
    return cut


def _count_cuts(result, length: int) -> int:
    """cdc_cuts may give cut offsets (ending at len) or chunk lengths (summing to len); check and count."""
    cuts = list(result)
    if not cuts:
        return 0
    if cuts[-1] == length and all(a < b for a, b in zip(cuts, cuts[1:])):
        return len(cuts)
    if sum(cuts) == length:
        return len(cuts)
    raise ValueError(f"cdc_cuts returned neither cut offsets nor chunk lengths of a {length}-byte buffer")


def cbr_cutter(min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE, max_size: int = MAX_SIZE) -> Callable:
    """A cutter over cbr_backup.engine.cdc_cuts; raises ImportError when the extension is not built."""
    from cbr_backup.engine import cdc_cuts
    probe = random.Random(0).randbytes(1 << 20)  # 1 MiB, enough for several chunks
    # The stub: cdc_cuts(buf, min_size, avg_size, max_size, final=False) -> list of cut offsets; final=True also
    # cuts the tail, as pyfastcdc's cut_buf does. Older spellings are tried after it.
    attempts = (
        lambda buf: cdc_cuts(buf, min_size, avg_size, max_size, True),
        lambda buf: cdc_cuts(buf, min_size=min_size, avg_size=avg_size, max_size=max_size),
        lambda buf: cdc_cuts(buf, min_size, avg_size, max_size),
    )
    errors = []
    for call in attempts:
        try:
            _count_cuts(call(probe), len(probe))
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
            continue

        def cut(buf, call=call) -> int:
            return _count_cuts(call(buf), len(buf))
        return cut
    raise TypeError("cannot call cbr_backup.engine.cdc_cuts: " + " | ".join(errors))


def best_of(cut: Callable, buf, rounds: int = 3) -> tuple[float, int]:
    best, chunks = float("inf"), 0
    for _ in range(rounds):
        start = time.perf_counter()
        chunks = cut(buf)
        best = min(best, time.perf_counter() - start)
    return best, chunks


def race(buf, rounds: int = 3) -> dict:
    """MB/s (2^20 bytes) of each chunker on buf, best of rounds; the two alternate round by round so that a
    change in the machine's load weighs on both. cbr_mb_s is None (with cbr_error) when the extension is missing.
    """
    size = len(buf)
    out: dict = {"buffer_bytes": size, "min_size": MIN_SIZE, "avg_size": AVG_SIZE, "max_size": MAX_SIZE,
                 "rounds": rounds, "cbr_mb_s": None, "pyfastcdc_mb_s": None}
    view = memoryview(buf)
    cutters = {"pyfastcdc": pyfastcdc_cutter()}
    try:
        import pyfastcdc
        out["pyfastcdc_version"] = pyfastcdc.__version__
    except AttributeError:
        pass
    try:
        cutters["cbr"] = cbr_cutter()
    except (ImportError, TypeError) as exc:
        out["cbr_error"] = f"{type(exc).__name__}: {exc}"
    best = {name: float("inf") for name in cutters}
    for _ in range(rounds):
        for name, cut in cutters.items():
            seconds, chunks = best_of(cut, view, 1)
            best[name] = min(best[name], seconds)
            out[f"{name}_chunks"] = chunks
    for name, seconds in best.items():
        out[f"{name}_mb_s"] = round(size / MB / seconds, 1)
    return out

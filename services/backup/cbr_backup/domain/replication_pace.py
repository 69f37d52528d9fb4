"""Replication controls (DESIGN.md 17.11): the pace of one replication's chunk bytes and the slots of a destination
region, as pure rules. The clock is injected, so the bucket is tested without sleeping."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

MB = 1_000_000          # rate_limit_mbps counts megabytes (10^6 bytes) per second
BURST_SECONDS = 1.0     # a bucket holds one second of its rate: a pause shorter than that is not made up later
SLOT_POLL = (0.5, 5.0)  # first and longest pause between looks for a free slot to the destination


def effective_rate(record_mbps: float, pair_mbps: float, running: int) -> float:
    """Bytes per second this replication may send: the smaller of its own pace and its share of the region
    pair's (split evenly over the replications running to that region, itself included); 0 means no limit."""
    limits = [record_mbps] if record_mbps > 0 else []
    if pair_mbps > 0:
        limits.append(pair_mbps / max(1, running))
    return min(limits) * MB if limits else 0.0


def slot_free(held_by_others: int, max_concurrent: int) -> bool:
    """Whether a job may start sending: fewer than max_concurrent other live jobs hold a slot to its region."""
    return held_by_others < max(1, max_concurrent)


def waiting_note(destination: str, held: int, max_concurrent: int) -> str:
    return (f"waiting for a slot to region {destination}: {held} of {max_concurrent} replications to it are "
            f"running")


@dataclass
class BucketAccount:
    """What a bucket did: bytes that passed it, how many times and how long (as computed) the sender waited."""
    paced_bytes: int = 0
    waits: int = 0
    wait_seconds: float = 0.0


class TokenBucket:
    """A token bucket in bytes. take(n) spends n tokens and answers how long to wait before sending them: a
    message larger than the bucket goes whole, and the debt it leaves delays the next one (the average holds)."""

    def __init__(self, rate: float, clock: Callable[[], float]):
        self.clock = clock
        self.rate = 0.0
        self.account = BucketAccount()
        self._last = clock()
        self._tokens = 0.0
        self.set_rate(rate)

    @property
    def capacity(self) -> float:
        return self.rate * BURST_SECONDS

    def set_rate(self, rate: float) -> None:
        """A new rate (bytes/s, 0 = none) from now on; tokens gathered so far at the old one stay, within the new
        bucket's size. A bucket starts full."""
        if not rate >= 0 or math.isinf(rate):
            raise ValueError(f"a rate must be 0 or a finite number of bytes/s, not {rate!r}")
        first = self.rate == 0
        self._refill()
        self.rate = float(rate)
        self._tokens = self.capacity if first else min(self._tokens, self.capacity)

    def _refill(self) -> None:
        now = self.clock()
        if self.rate:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, nbytes: int) -> float:
        """Spends nbytes; the seconds to wait before sending them (0 without a limit or with tokens enough)."""
        self.account.paced_bytes += nbytes
        if not self.rate:
            return 0.0
        self._refill()
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self.account.waits += 1
        self.account.wait_seconds += wait
        return wait

"""The replication controls' rules (DESIGN.md 17.11): the token bucket on an injected clock, the effective rate and
the destination's slots."""
import pytest

from cbr_backup.domain.replication_pace import MB, TokenBucket, effective_rate, slot_free, waiting_note


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_bucket_starts_full_then_paces_to_its_rate():
    clock = Clock()
    bucket = TokenBucket(4 * MB, clock)
    assert bucket.take(4 * MB) == 0.0                 # one second's burst goes at once
    assert bucket.take(2 * MB) == pytest.approx(0.5)  # then each byte waits its turn
    clock.now += 0.5
    assert bucket.take(2 * MB) == pytest.approx(0.5)
    assert (bucket.account.paced_bytes, bucket.account.waits) == (8 * MB, 2)
    assert bucket.account.wait_seconds == pytest.approx(1.0)


def test_the_average_holds_over_many_messages():
    clock = Clock()
    bucket = TokenBucket(1 * MB, clock)
    for _ in range(100):
        clock.now += bucket.take(256 * 1024)  # the sender sleeps what it is told
    sent = 100 * 256 * 1024
    assert clock.now - 100.0 == pytest.approx((sent - 1 * MB) / MB)  # the burst, then exactly the rate


def test_a_message_larger_than_the_bucket_goes_whole_and_its_debt_delays_the_next():
    clock = Clock()
    bucket = TokenBucket(1 * MB, clock)
    assert bucket.take(3 * MB) == pytest.approx(2.0)
    clock.now += 2.0
    assert bucket.take(MB) == pytest.approx(1.0)


def test_an_idle_bucket_keeps_at_most_one_second():
    clock = Clock()
    bucket = TokenBucket(2 * MB, clock)
    bucket.take(2 * MB)
    clock.now += 60
    assert bucket.take(2 * MB) == 0.0
    assert bucket.take(2 * MB) == pytest.approx(1.0)


def test_no_rate_means_no_wait_but_the_bytes_are_counted():
    bucket = TokenBucket(0, Clock())
    assert bucket.take(10 * MB) == 0.0
    assert (bucket.account.paced_bytes, bucket.account.waits) == (10 * MB, 0)


def test_a_new_rate_applies_from_now_without_a_fresh_burst():
    clock = Clock()
    bucket = TokenBucket(4 * MB, clock)
    bucket.take(4 * MB)
    bucket.set_rate(1 * MB)            # a second replication started to the region: the share halves or less
    assert bucket.take(MB) == pytest.approx(1.0)
    clock.now += 1.0
    bucket.set_rate(4 * MB)            # it ended: the debt is paid, the bucket refills at the new rate
    clock.now += 0.25
    assert bucket.take(MB) == 0.0


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_a_bad_rate_is_refused(rate):
    with pytest.raises(ValueError):
        TokenBucket(rate, Clock())


@pytest.mark.parametrize("record, pair, running, rate", [
    (0, 0, 3, 0.0),             # no limit at all
    (4, 0, 3, 4 * MB),          # the record's own
    (0, 12, 3, 4 * MB),         # the pair's, split over the three running to that region
    (2, 12, 3, 2 * MB),         # the smaller of the two
    (8, 12, 1, 8 * MB),
    (0, 12, 0, 12 * MB),        # counted before its own slot shows: at least itself
])
def test_the_effective_rate_is_the_smaller_of_the_record_and_its_share(record, pair, running, rate):
    assert effective_rate(record, pair, running) == pytest.approx(rate)


def test_slots():
    assert slot_free(0, 1) and not slot_free(1, 1)
    assert slot_free(1, 2) and not slot_free(2, 2)
    assert slot_free(0, 0)  # a directory never says 0; a job is never kept out for good
    assert "1 of 1" in waiting_note("region-b", 1, 1) and "region-b" in waiting_note("region-b", 1, 1)

"""A progress bar's rate and time left."""
from __future__ import annotations

from cbr_cli.progress import Meter

MIB = 1024 * 1024


def test_rate_over_the_window_and_time_left():
    meter = Meter()
    assert meter.observe(100.0, 0, 100 * MIB, 0, 99.0, None) == (None, None)  # nothing done yet
    meter.observe(101.0, 10 * MIB, 100 * MIB, 10, 99.0, None)
    rate, left = meter.observe(103.0, 30 * MIB, 100 * MIB, 30, 99.0, None)
    assert rate == 10 * MIB and left == 7.0
    for second in range(104, 130):  # the window forgets a slow start
        rate, left = meter.observe(float(second), 30 * MIB + (second - 103) * 2 * MIB, 200 * MIB, 50, 99.0, None)
    assert rate == 2 * MIB


def test_first_sight_uses_the_start_and_an_end_the_whole_run():
    assert Meter().observe(110.0, 50 * MIB, 100 * MIB, 50, 100.0, None) == (5 * MIB, 10.0)
    assert Meter().observe(200.0, 100 * MIB, 100 * MIB, 100, 100.0, 120.0) == (5 * MIB, 0.0)
    # No bytes known: the time left from the percent at the pace so far.
    assert Meter().observe(130.0, 0, 0, 25, 100.0, None) == (None, 90.0)

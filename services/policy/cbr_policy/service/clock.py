"""The scheduler's clock, injectable: the system's, or one that runs faster from an anchor (tests, benches)."""
from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Protocol

from cbr_common.settings import SettingsError


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time = start + (wall time - wall_anchor) * speed. Processes given the same three values share
    one simulated clock, so several schedulers can race through hours of ticks in seconds."""
    start: dt.datetime
    wall_anchor: float
    speed: float

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=(time.time() - self.wall_anchor) * self.speed)


@dataclass
class ManualClock:
    """A clock the test moves by hand."""
    current: dt.datetime

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, **delta) -> dt.datetime:
        self.current += dt.timedelta(**delta)
        return self.current


SCALED = re.compile(r"(?P<start>\S+)@(?P<anchor>[0-9.]+)x(?P<speed>[0-9.]+)")


def clock_from_setting(value: str) -> Clock:
    """CBR_SCHEDULER_CLOCK: empty for the system clock, or "<ISO start>@<unix wall anchor>x<speed>"."""
    if not value:
        return SystemClock()
    match = SCALED.fullmatch(value)
    try:
        start = dt.datetime.fromisoformat(match["start"].replace("Z", "+00:00")) if match else None
    except ValueError:
        start = None
    if start is None or start.tzinfo is None:
        raise SettingsError(f"CBR_SCHEDULER_CLOCK must be '<ISO time with zone>@<unix time>x<speed>', got {value!r}")
    return ScaledClock(start, float(match["anchor"]), float(match["speed"]))

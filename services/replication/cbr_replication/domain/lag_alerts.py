"""When a lag is published (cbr.replication.lagging): once as a (resource, destination region)'s lag reaches the
threshold, and not again until it has fallen below it (recovered) and reached it again."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from cbr_replication.domain.lag import Lag

LagKey = tuple[str, str]  # (resource_id, destination_region)


@dataclass(frozen=True)
class Crossings:
    crossed: list[Lag]      # lagging now, not before: publish each once
    recovered: set[LagKey]  # lagging before, not now (or no longer measured): may cross again


def key_of(lag: Lag) -> LagKey:
    return lag.resource_id, lag.destination_region


def crossings(lags: Iterable[Lag], lagging: set[LagKey], threshold: dt.timedelta) -> Crossings:
    """`lagging`: the keys published before and not recovered since. A zero threshold is off: nothing crosses,
    and whatever was lagging counts as recovered, so that turning the alert back on starts afresh."""
    lags = list(lags)
    if threshold <= dt.timedelta(0):
        return Crossings([], set(lagging))
    over = {key_of(lag) for lag in lags if lag.oldest_unreplicated is not None and lag.lag >= threshold}
    return Crossings([lag for lag in lags if key_of(lag) in over and key_of(lag) not in lagging],
                     set(lagging) - over)

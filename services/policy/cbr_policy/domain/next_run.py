"""When a policy runs next: its schedule's first fire time after now, as every client is shown it."""
from __future__ import annotations

import datetime as dt

from cbr_policy.domain.model import Policy
from cbr_policy.domain.schedule import parse_schedule


def next_run_time(policy: Policy, now: dt.datetime) -> dt.datetime | None:
    """The first fire time strictly after `now` (never before the trigger's start); None for a disabled policy,
    which the scheduler skips. A stored policy's schedule parsed when it was saved, so this does not raise."""
    if not policy.enabled or not policy.trigger.patterns:
        return None
    schedule = parse_schedule(policy.trigger.patterns, policy.operation_definition.timezone,
                              policy.trigger.start_time)
    return schedule.next_fire(now)

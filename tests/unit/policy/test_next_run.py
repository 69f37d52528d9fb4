"""A policy's next run time: its schedule's next fire after now, in its zone, never before its start; none when
it is switched off."""
from __future__ import annotations

import datetime as dt

from cbr_policy.domain.model import OperationDefinition, Policy, Trigger
from cbr_policy.domain.next_run import next_run_time
from cbr_policy.grpc_api import convert

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 10, 30, tzinfo=UTC)  # a Monday


def policy(patterns, timezone="", start=NOW - dt.timedelta(days=30), enabled=True) -> Policy:
    return Policy(policy_id="6f9619ff-8b86-d011-b42d-00c04fc964ff", project_id="p", name="n",
                  operation_type="backup", enabled=enabled, trigger=Trigger(tuple(patterns), start),
                  operation_definition=OperationDefinition(timezone=timezone), created_time=NOW, updated_time=NOW)


def test_next_fire_after_now_in_the_policy_zone():
    daily = policy(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"])
    assert next_run_time(daily, NOW) == dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 06:00 today has passed
    shanghai = policy(["FREQ=DAILY;BYHOUR=22;BYMINUTE=0"], timezone="UTC+08:00")
    assert next_run_time(shanghai, NOW) == dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    weekly = policy(["FREQ=WEEKLY;BYDAY=FR;BYHOUR=1;BYMINUTE=15", "FREQ=DAILY;BYHOUR=23;BYMINUTE=0"])
    assert next_run_time(weekly, NOW) == dt.datetime(2026, 3, 2, 23, 0, tzinfo=UTC)


def test_not_before_the_start_and_none_when_disabled():
    later = policy(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], start=dt.datetime(2030, 1, 1, 7, tzinfo=UTC))
    assert next_run_time(later, NOW) == dt.datetime(2030, 1, 2, 6, 0, tzinfo=UTC)
    assert next_run_time(policy(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], enabled=False), NOW) is None


def test_the_message_carries_it_only_when_there_is_one():
    daily = policy(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"])
    assert convert.policy_out(daily, NOW).next_run_time.ToDatetime(UTC) == dt.datetime(2026, 3, 3, 6, tzinfo=UTC)
    assert not convert.policy_out(daily).HasField("next_run_time")
    off = policy(["FREQ=DAILY;BYHOUR=6;BYMINUTE=0"], enabled=False)
    assert not convert.policy_out(off, NOW).HasField("next_run_time")

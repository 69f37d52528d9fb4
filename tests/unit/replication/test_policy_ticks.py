"""Policy ticks: backup ticks are not ours, a deleted policy's tick is dropped, a refusal is logged and dropped,
an outage is raised (the tick comes again) until the tick is too old to matter."""
import datetime as dt

import pytest

from cbr.events.v1 import policy_events_pb2 as policy_ev
from cbr_common.errors import UnavailableError
from cbr_common.regions import RegionDirectory
from cbr_replication.service.policy_ticks import TICK_PATIENCE, run_tick
from cbr_replication.service.replicate import Peers

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)


class Policies:
    def __init__(self, answer=b"", error: Exception | None = None):
        self.answer, self.error, self.asked = answer, error, 0

    async def replica_retention(self, project_id, policy_id):
        self.asked += 1
        if self.error:
            raise self.error
        return self.answer


def no_uow():
    raise AssertionError("a refused tick must not reach the database")


PEERS = Peers(RegionDirectory("region-a", ()), backups=None, destinations=None)


def tick(operation_type="replication", region="region-b", age=dt.timedelta(0)) -> policy_ev.PolicyTriggered:
    event = policy_ev.PolicyTriggered(project_id="p", policy_id="pol", vault_id="0f9e1c2a-3b4d-4e5f-8a6b-7c8d9e0f1a2b",
                                      tick_id="tick-1", operation_type=operation_type, destination_region=region,
                                      destination_project_id="q",
                                      destination_vault_id="1f9e1c2a-3b4d-4e5f-8a6b-7c8d9e0f1a2b")
    event.occurred_time.FromDatetime(NOW - age)
    return event


async def test_backup_ticks_are_left_alone():
    policies = Policies()
    assert await run_tick(tick("backup"), no_uow, PEERS, policies, now=lambda: NOW) == 0
    assert policies.asked == 0


async def test_a_deleted_policys_tick_is_dropped():
    assert await run_tick(tick(), no_uow, PEERS, Policies(answer=None), now=lambda: NOW) == 0


async def test_a_refused_tick_is_dropped():
    # region-b is not in region-a's (empty) directory: 6901, logged, nothing written.
    assert await run_tick(tick(), no_uow, PEERS, Policies(), now=lambda: NOW) == 0


async def test_an_outage_brings_the_tick_again_until_it_is_too_old():
    down = Policies(error=UnavailableError("policy service unavailable"))
    with pytest.raises(UnavailableError):
        await run_tick(tick(), no_uow, PEERS, down, now=lambda: NOW)
    assert await run_tick(tick(age=TICK_PATIENCE), no_uow, PEERS, down, now=lambda: NOW) == 0

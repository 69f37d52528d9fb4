"""cbr.replication.lagging on a real source region, the lag check driven by hand with a moved clock: a resource
whose lag crosses the threshold is published once, not again while it lags, and again only after it recovered
(its oldest backup replicated, the next one fresh) and lags past the threshold again."""
from __future__ import annotations

import datetime as dt
import uuid

from cbr.events.v1 import policy_events_pb2 as policy_ev
from cbr.events.v1 import replication_events_pb2 as ev
from cbr.replication.v1 import replication_pb2 as rp
from cbr_common import metrics
from cbr_common.db import utcnow
from cbr_replication.adapters.backups import GrpcBackups
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.service.lag_alerts import check_lags
from cbr_replication.service.replicate import Peers
from tests.integration.replication.conftest import REGION_B
from tests.integration.replication.test_records import DIGEST, record_of, request
from tests.support.backups import backup_now, disk_in_vault
from tests.support.services import eventually
from tests.support.workers import without_shared_workers

DAY = dt.timedelta(days=1)


async def test_a_lagging_resource_is_published_once_per_crossing(source_region):
    runtime = source_region.services.runtimes["replication"]
    backups = GrpcBackups(runtime.settings)
    peers = Peers(regions=None, backups=backups, destinations=None)  # the check asks only the backup service

    def make_uow() -> ReplicationUnitOfWork:
        return ReplicationUnitOfWork(runtime.db)

    async def check(ahead: dt.timedelta) -> list[ev.ReplicationLagging]:
        """One pass, the clock moved `ahead`; this vault's lagging events so far."""
        await check_lags(make_uow, peers, DAY, now=lambda: utcnow() + ahead)
        return [e for e in await source_region.published("cbr.replication.lagging", ev.ReplicationLagging)
                if e.source_vault_id == vault.vault_id]

    caller = source_region.caller()
    disk, vault = await disk_in_vault(caller, seed=16)
    first = await backup_now(caller, vault.vault_id)
    second = await backup_now(caller, vault.vault_id)
    # No worker runs the replication task: the test plays its update.
    async with without_shared_workers(source_region.services):
        made = await caller.replication.ReplicateBackup(request(first.backup_id))  # measured in region-b now
        try:
            assert await check(dt.timedelta(0)) == []  # fresh backups do not lag
            [crossed] = await check(2 * DAY)
            assert (crossed.project_id, crossed.resource_id, crossed.resource_type, crossed.destination_region,
                    crossed.oldest_unreplicated_backup_id, crossed.unreplicated_backups,
                    crossed.threshold_seconds) == (caller.project_id, disk.resource_id, "disk", REGION_B,
                                                   first.backup_id, 2, DAY.total_seconds())
            assert crossed.lag_seconds >= DAY.total_seconds()
            assert crossed.oldest_unreplicated_time == first.created_time
            # The same pass set the gauge the CbrReplicationLagging alert compares with its threshold.
            assert int(metrics.REPLICATION_LAG.value(vault.vault_id, disk.resource_id, REGION_B)) == crossed.lag_seconds
            assert metrics.REPLICATION_LAG_THRESHOLD._value.get() == DAY.total_seconds()
            assert len(await check(3 * DAY)) == 1  # still lagging: not again

            record = await record_of(caller, made.replication_record_id)  # the first replicated: the lag recovers
            await source_region.task_update(record, "completed", attempt=1, destination_backup_id=str(uuid.uuid4()),
                                            source_manifest_digest=DIGEST, replica_manifest_digest=DIGEST)
            await eventually(lambda: _succeeded(caller, record.replication_record_id))
            assert len(await check(dt.timedelta(0))) == 1  # the second is fresh
            assert metrics.REPLICATION_LAG.value(vault.vault_id, disk.resource_id, REGION_B) < DAY.total_seconds()
            assert await source_region.rows("SELECT 1 FROM replication.lagging WHERE source_vault_id = %s",
                                            vault.vault_id) == []

            events = await check(2 * DAY)  # the second, never replicated, crosses again
            assert [(e.oldest_unreplicated_backup_id, e.unreplicated_backups) for e in events] == [
                (first.backup_id, 2), (second.backup_id, 1)]
            assert len(await check(2 * DAY)) == 2
        finally:
            await backups.close()


async def test_a_replication_tick_has_its_vault_watched(source_region):
    caller = source_region.caller()
    _, vault = await disk_in_vault(caller, seed=17)  # no backup: the tick replicates nothing
    event = policy_ev.PolicyTriggered(
        event_id=str(uuid.uuid4()), project_id=caller.project_id, policy_id=str(uuid.uuid4()),
        vault_id=vault.vault_id, tick_id=str(uuid.uuid4()), operation_type="replication",
        destination_region=REGION_B, destination_project_id="project-b", destination_vault_id=str(uuid.uuid4()))
    event.occurred_time.FromDatetime(utcnow())
    await source_region.publish(event, "cbr.policy.triggered")
    watched = await eventually(lambda: source_region.rows(
        "SELECT project_id, destination_region, policy_id FROM replication.lag_watches WHERE source_vault_id = %s",
        vault.vault_id))
    assert watched == [(caller.project_id, REGION_B, event.policy_id)]


async def _succeeded(caller, record_id: str) -> bool:
    return (await record_of(caller, record_id)).status == rp.REPLICATION_STATUS_SUCCESS

"""The lag check: every pass measures the lag of each watched vault's resources in each of its destination
regions (as GetReplicationLag does) and publishes cbr.replication.lagging once per crossing of the threshold."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Callable

from cbr.events.v1 import replication_events_pb2 as ev
from cbr_common import metrics
from cbr_common.db import utcnow
from cbr_common.errors import CbrError
from cbr_replication.domain import lag as lags
from cbr_replication.domain.lag import Lag
from cbr_replication.domain.lag_alerts import crossings
from cbr_replication.service.replicate import MakeUow, Peers

log = logging.getLogger("cbr.replication.lag")


async def watch_vault(make_uow: MakeUow, project_id: str, vault_id: str, region: str, policy_id: str) -> None:
    """A replication policy's tick names a vault bound to it: the check measures it from now on."""
    async with make_uow() as uow:
        await uow.lag.watch(project_id, vault_id, region, policy_id, utcnow())
        await uow.commit()


async def check_lags(make_uow: MakeUow, peers: Peers, threshold: dt.timedelta,
                     now: Callable[[], dt.datetime] = utcnow) -> int:
    """One pass; how many crossings it published. A vault the backup service cannot list now waits for the next
    pass (its state stays as it was)."""
    if threshold <= dt.timedelta(0):
        return 0
    async with make_uow() as uow:
        watched = await uow.lag.watched()
    published = 0
    for (project_id, vault_id), regions in sorted(watched.items()):
        try:
            published += await _check_vault(make_uow, peers, project_id, vault_id, regions, threshold, now())
        except CbrError as exc:
            log.warning("lag of vault %s not measured: %s", vault_id, exc.message)
    return published


async def _check_vault(make_uow: MakeUow, peers: Peers, project_id: str, vault_id: str, regions: set[str],
                       threshold: dt.timedelta, when: dt.datetime) -> int:
    backups = [b for b in await peers.backups.replicable_backups(project_id, vault_id)
               if not b.corrupt and not b.parent_id]
    async with make_uow() as uow:
        measured = lags.replication_lag(backups, await uow.records.of_source_vault(project_id, vault_id),
                                        regions, when)
        metrics.replication_lags(vault_id, measured, threshold.total_seconds())
        change = crossings(measured, await uow.lag.lagging(project_id, vault_id), threshold)
        await uow.lag.recover(project_id, vault_id, change.recovered)
        published = 0
        for lag in change.crossed:
            if await uow.lag.add_lagging(project_id, vault_id, lag, when):
                await uow.publish(lagging_event(project_id, vault_id, lag, threshold))
                published += 1
        await uow.commit()
    return published


def lagging_event(project_id: str, vault_id: str, lag: Lag, threshold: dt.timedelta) -> ev.ReplicationLagging:
    event = ev.ReplicationLagging(
        project_id=project_id, source_vault_id=vault_id, resource_id=lag.resource_id,
        resource_type=lag.resource_type, destination_region=lag.destination_region,
        oldest_unreplicated_backup_id=lag.oldest_unreplicated.backup_id, lag_seconds=int(lag.lag.total_seconds()),
        threshold_seconds=int(threshold.total_seconds()), unreplicated_backups=lag.unreplicated_backups)
    if lag.oldest_unreplicated.created_time is not None:
        event.oldest_unreplicated_time.FromDatetime(lag.oldest_unreplicated.created_time)
    return event


async def run_lag_checks(make_uow: MakeUow, peers: Peers, threshold: dt.timedelta, interval: float) -> None:
    """The check's loop: a failed pass is logged and the next one tries again."""
    while True:
        try:
            await check_lags(make_uow, peers, threshold)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lag check failed; trying again")
        await asyncio.sleep(interval)

"""Wires the replication service from one Settings: the region directory (CBR_REGIONS_FILE), the backup and policy
services it asks (CBR_BACKUP_ADDR, CBR_POLICY_ADDR), the task updates and policy ticks it follows, the lag check
(CBR_REPLICATION_LAG_ALERT_SECONDS) and the ReplicationService servicer."""
from __future__ import annotations

import datetime as dt

from cbr.replication.v1 import replication_pb2_grpc as rpc
from cbr_common.jetstream import EventConsumer
from cbr_common.regions import load_regions
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_replication.adapters.backups import GrpcBackups
from cbr_replication.adapters.destinations import PeerDestinations
from cbr_replication.adapters.policies import GrpcPolicies
from cbr_replication.adapters.tables import metadata
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.grpc_api.servicer import ReplicationServicer
from cbr_replication.service import task_updates
from cbr_replication.service.lag_alerts import run_lag_checks
from cbr_replication.service.policy_ticks import tick_subscription
from cbr_replication.service.replicate import Peers

SERVICE_NAME = "cbr.replication.v1.ReplicationService"


async def start(settings: Settings) -> ServiceRuntime:
    regions = load_regions(settings.regions_file, settings.region)  # a bad directory stops the start, before any I/O
    for required in ("backup", "policy"):  # fail at start, naming the missing setting
        settings.peer(required)
    runtime = await open_runtime(settings, metadata)

    def make_uow() -> ReplicationUnitOfWork:
        return ReplicationUnitOfWork(runtime.db)

    backups, policies = GrpcBackups(settings), GrpcPolicies(settings)
    destinations = PeerDestinations(regions, settings.peer_timeout_seconds)
    runtime.closers += [backups.close, policies.close, destinations.close]
    peers = Peers(regions, backups, destinations)
    consumer = EventConsumer(runtime.js, "replication",
                             task_updates.SUBSCRIPTIONS + [tick_subscription(make_uow, peers, policies)],
                             make_uow, metadata)
    runtime.spawn(consumer.run(), "replication-events")
    if settings.replication_lag_alert_seconds > 0:
        runtime.spawn(run_lag_checks(make_uow, peers, dt.timedelta(seconds=settings.replication_lag_alert_seconds),
                                     settings.replication_lag_check_seconds), "replication-lag-check")
    return await serve(runtime, [ServiceBinding(rpc.add_ReplicationServiceServicer_to_server,
                                                ReplicationServicer(make_uow, peers), SERVICE_NAME)])

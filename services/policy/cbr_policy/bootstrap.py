"""Wires the policy service from one Settings: database, events, the gRPC servicer, the scheduler and the
retention runs (any number of replicas may run both: they share the work through row locks)."""
from __future__ import annotations

import datetime as dt

from cbr.policy.v1 import policy_pb2_grpc
from cbr_common.jetstream import EventConsumer
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_policy.adapters.tables import metadata
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.grpc_api.servicer import PolicyServicer
from cbr_policy.adapters.backups import GrpcBackups
from cbr_policy.service import retention_runs
from cbr_policy.service.clock import clock_from_setting
from cbr_policy.service.events import SUBSCRIPTIONS
from cbr_policy.service.scheduler import Scheduler

SERVICE_NAME = "cbr.policy.v1.PolicyService"


async def start(settings: Settings) -> ServiceRuntime:
    runtime = await open_runtime(settings, metadata)

    def make_uow() -> PolicyUnitOfWork:
        return PolicyUnitOfWork(runtime.db)

    consumer = EventConsumer(runtime.js, "policy", SUBSCRIPTIONS + retention_runs.SUBSCRIPTIONS, make_uow, metadata)
    runtime.spawn(consumer.run(), "policy-events")
    backups = GrpcBackups(settings)
    runtime.closers.append(backups.close)
    clock = clock_from_setting(settings.scheduler_clock)
    if settings.scheduler_interval_seconds > 0:  # 0: this replica serves the API only
        scheduler = Scheduler(make_uow, backups, clock,
                              firing_lease=dt.timedelta(seconds=settings.firing_lease_seconds))
        runtime.spawn(scheduler.run(settings.scheduler_interval_seconds), "scheduler")
        retention = retention_runs.RetentionRunner(make_uow, backups, clock)
        runtime.spawn(retention.run(settings.scheduler_interval_seconds), "retention")
    servicer = PolicyServicer(make_uow, settings.region, backups, clock)
    return await serve(runtime, [ServiceBinding(policy_pb2_grpc.add_PolicyServiceServicer_to_server, servicer,
                                                SERVICE_NAME)])

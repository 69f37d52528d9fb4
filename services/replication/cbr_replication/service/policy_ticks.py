"""Replication policy ticks (cbr.policy.triggered, operation_type replication): each runs ReplicateCheckpoint for
its vault with the policy's retention rule, once per tick (the tick id is the request_id)."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from cbr.events.v1 import policy_events_pb2 as policy_ev
from cbr_common.db import utcnow
from cbr_common.errors import CbrError, UnavailableError
from cbr_common.jetstream import Subscription
from cbr_replication.adapters.policies import PolicyPort
from cbr_replication.domain.model import Destination
from cbr_replication.service.lag_alerts import watch_vault
from cbr_replication.service.replicate import MakeUow, Peers, ReplicateCheckpoint, replicate_checkpoint

log = logging.getLogger("cbr.replication.ticks")

# A tick that could not reach a peer is tried again (redelivered) for this long, then given up: the next tick
# replicates whatever this one missed.
TICK_PATIENCE = dt.timedelta(hours=1)


def tick_subscription(make_uow: MakeUow, peers: Peers, policies: PolicyPort) -> Subscription:
    async def on_policy_triggered(event: policy_ev.PolicyTriggered, uow) -> None:
        if event.operation_type == "replication":  # the lag check watches the vault, even if this tick fails
            await watch_vault(make_uow, event.project_id, event.vault_id, event.destination_region, event.policy_id)
        await run_tick(event, make_uow, peers, policies)
    return Subscription(policy_ev.PolicyTriggered, on_policy_triggered)


async def run_tick(event: policy_ev.PolicyTriggered, make_uow: MakeUow, peers: Peers, policies: PolicyPort,
                   now: Callable[[], dt.datetime] = utcnow) -> int:
    """How many records the tick made; refusals are logged (the request is wrong and stays wrong), outages are
    raised so that the event comes again."""
    if event.operation_type != "replication":
        return 0  # backup ticks are the backup service's
    fields = {"tick_id": event.tick_id, "policy_id": event.policy_id, "vault_id": event.vault_id}
    try:
        retention = await policies.replica_retention(event.project_id, event.policy_id)
        if retention is None:
            log.info("replication tick of a deleted policy dropped", extra={"fields": fields})
            return 0
        made = await replicate_checkpoint(ReplicateCheckpoint(
            project_id=event.project_id, vault_id=event.vault_id, auto_trigger=True, request_id=event.tick_id,
            policy_id=event.policy_id, retention=retention,
            destination=Destination(event.destination_region, event.destination_project_id,
                                    event.destination_vault_id)), make_uow, peers)
    except UnavailableError as exc:
        occurred = event.occurred_time.ToDatetime(tzinfo=dt.timezone.utc) if event.HasField("occurred_time") \
            else now()
        if now() - occurred < TICK_PATIENCE:
            raise
        log.warning("replication tick given up", extra={"fields": {**fields, "error": exc.message}})
        return 0
    except CbrError as exc:
        log.warning("replication tick refused", extra={"fields": {**fields, "code": exc.cbr_code,
                                                                  "error": exc.message}})
        return 0
    log.info("replication tick ran", extra={"fields": {**fields, "records": len(made)}})
    return len(made)

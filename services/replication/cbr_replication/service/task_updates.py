"""How a record follows its task: the backup service's cbr.backup.replication_<state> events, each applied once
(inbox) under the record's row lock; a record's end is announced once, as cbr.replication.completed or .failed."""
from __future__ import annotations

import functools

from cbr.events.v1 import replication_events_pb2 as ev
from cbr_common.db import utcnow
from cbr_common.jetstream import Subscription
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.domain import rules
from cbr_replication.domain.model import TASK_STATES, Counters, ReplicationRecord, TaskUpdate


def task_update(event: ev.ReplicationTaskUpdate, state: str) -> TaskUpdate:
    c = event.counters
    return TaskUpdate(
        project_id=event.project_id, replication_record_id=event.replication_record_id,
        state=event.state or state, task_id=event.task_id, attempt=event.attempt, progress=event.progress,
        bytes_done=event.bytes_done, bytes_total=event.bytes_total,
        counters=Counters(c.chunk_bytes_sent, c.present_bytes, c.resent_bytes, c.metadata_bytes, c.chunks_sent,
                          c.chunks_present) if event.HasField("counters") else None,
        destination_backup_id=event.destination_backup_id, source_manifest_digest=event.source_manifest_digest,
        replica_manifest_digest=event.replica_manifest_digest, error_code=event.error_code,
        error_message=event.error_message)


async def on_task_update(event: ev.ReplicationTaskUpdate, uow: ReplicationUnitOfWork, state: str) -> None:
    record = await uow.records.get(event.replication_record_id, for_update=True)
    if record is None:
        return  # another region's record, or a made-up one
    moved = rules.apply_update(record, task_update(event, state), utcnow())
    if moved is None:
        return
    await uow.records.save(moved)
    if moved.final and not record.final:
        await uow.publish(ended_event(moved))


def ended_event(record: ReplicationRecord):
    common = dict(project_id=record.project_id, replication_record_id=record.replication_record_id,
                  source_vault_id=record.source_vault_id, source_backup_id=record.source_backup_id,
                  destination_region=record.destination.region,
                  destination_project_id=record.destination.project_id,
                  destination_vault_id=record.destination.vault_id, auto_trigger=record.auto_trigger,
                  policy_id=record.policy_id)
    if record.status == "success":
        return ev.ReplicationCompleted(**common, destination_backup_id=record.destination_backup_id,
                                       transferred_bytes=record.transferred_bytes)
    return ev.ReplicationFailed(**common, error_code=record.error_code, error_message=record.error_message)


SUBSCRIPTIONS = [Subscription(ev.ReplicationTaskUpdate, functools.partial(on_task_update, state=state), state)
                 for state in TASK_STATES]

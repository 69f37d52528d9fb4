"""Replication tasks at the source (DESIGN.md 17.2): made from the replication service's
`cbr.replication.requested`, and reported back to it as `ReplicationTaskUpdate`s on cbr.backup.replication_<state>.

The replication service keeps the record; this service owns the task, its job and the chunks it reads. Every
update carries the record's counters as replication_jobs holds them (17.9).
"""
from __future__ import annotations

from cbr.events.v1 import replication_events_pb2 as rev
from cbr.replication.v1 import replication_pb2
from cbr_backup.adapters.replication_jobs import ReplicationJob, replication_jobs_of
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.model import Task
from cbr_backup.domain.replication_source import check_replicable
from cbr_backup.service import jobs
from cbr_common import errors

OPERATION = "replication"
_LIMITS = {"destination_region": 63, "destination_project_id": 64, "destination_vault_id": 36, "name": 64,
           "description": 255, "policy_id": 36, "replication_record_id": 36}


class InvalidReplicationRequestError(errors.InvalidArgumentError):
    cbr_code = "ReplicationService.6911"


async def on_replication_requested(event: rev.ReplicationRequested, uow: BackupUnitOfWork) -> None:
    """Creates the replication task, its job and its replication_jobs row in the consumer's transaction, and says
    so (`created`); a backup that can no longer be replicated gets `failed` with its code and no task."""
    repo = replication_jobs_of(uow)
    if await repo.task_of_record(event.replication_record_id) is not None:
        return  # made already (the event again under a new id)
    backup = await uow.backups.get_backup(event.project_id, event.source_backup_id, for_update=True)
    try:
        _check_request(event)
        backup = check_replicable(backup, event.source_backup_id, event.source_vault_id)
    except errors.CbrError as exc:
        await uow.publish(rev.ReplicationTaskUpdate(
            project_id=event.project_id, replication_record_id=event.replication_record_id, state="failed",
            error_code=exc.cbr_code or "", error_message=exc.message[:2000]), kind="failed")
        return
    task = jobs.new_task(event.project_id, OPERATION, vault_id=backup.vault_id, resource_id=backup.resource_id,
                         resource_name=backup.resource_name, backup_id=backup.backup_id,
                         checkpoint_id=backup.checkpoint_id, policy_id=event.policy_id,
                         params={"record_id": event.replication_record_id,
                                 "destination_region": event.destination_region},
                         extra_info={"replication_record_id": event.replication_record_id,
                                     "destination_region": event.destination_region,
                                     "destination_vault_id": event.destination_vault_id})
    job = ReplicationJob(
        task_id=task.task_id, record_id=event.replication_record_id, project_id=event.project_id,
        source_vault_id=backup.vault_id, source_backup_id=backup.backup_id,
        destination_region=event.destination_region, destination_project_id=event.destination_project_id,
        destination_vault_id=event.destination_vault_id, name=event.name or backup.name,
        description=event.description, auto_trigger=event.auto_trigger, policy_id=event.policy_id,
        retention=event.retention.SerializeToString() if event.HasField("retention") else None,
        rate_limit_mbps=event.rate_limit_mbps)
    await jobs.enqueue(uow, task)
    await repo.add(job)
    await publish_update(uow, task, job, "created")


def _check_request(event: rev.ReplicationRequested) -> None:
    for name, limit in _LIMITS.items():
        if len(getattr(event, name)) > limit:
            raise InvalidReplicationRequestError(f"{name} is longer than {limit} characters")
    if not 0 <= event.rate_limit_mbps < float("inf"):
        raise InvalidReplicationRequestError("rate_limit_mbps must be 0 or more")
    for name in ("replication_record_id", "destination_region", "destination_project_id", "destination_vault_id"):
        if not getattr(event, name):
            raise InvalidReplicationRequestError(f"{name} is required")


def task_update(task: Task, job: ReplicationJob, state: str, bytes_done: int = 0, bytes_total: int = 0,
                **fields) -> rev.ReplicationTaskUpdate:
    """One update of the record: the state, the attempt, progress and the counters as the job row has them."""
    return rev.ReplicationTaskUpdate(
        project_id=task.project_id, replication_record_id=job.record_id, task_id=task.task_id, state=state,
        attempt=task.attempts, bytes_done=bytes_done, bytes_total=bytes_total,
        progress=100 if state == "completed" else lc.running_percent(bytes_done, bytes_total),
        counters=replication_pb2.ReplicationCounters(**job.counters()), **fields)


async def publish_update(uow: BackupUnitOfWork, task: Task, job: ReplicationJob, state: str, **values) -> None:
    await uow.publish(task_update(task, job, state, **values), kind=state)


async def publish_end(uow: BackupUnitOfWork, task: Task, status: str, code: str = "", message: str = "",
                      done: int | None = None, total: int | None = None) -> None:
    """The task ended other than by its job's success (failed, timed out, cancelled), or an attempt ended to be
    tried again (retrying), in the transaction that records it (service/lifecycle.py): the record hears it once."""
    job = await replication_jobs_of(uow).get(task.task_id)
    if job is None:
        return
    state = {lc.CANCELLED: "cancelled", "retrying": "retrying"}.get(status, "failed")
    await publish_update(uow, task, job, state, bytes_done=task.bytes_done if done is None else done,
                         bytes_total=task.bytes_total if total is None else total, error_code=code,
                         error_message=message[:2000])

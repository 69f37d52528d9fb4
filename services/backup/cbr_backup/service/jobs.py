"""Jobs: a task row plus a message on the CBR_JOBS work-queue stream that workers take.

The message goes through the outbox in the transaction that writes the task, so a task never exists without
its job, nor a job without its task. Workers: cbr_backup.worker.
"""
from __future__ import annotations

import uuid

from nats.js.api import RetentionPolicy, StreamConfig

from cbr.backup.v1 import job_pb2
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.model import Task
from cbr_common.db import utcnow

# Work-queue retention: a job is gone once a worker acks it (only when its task is final), and never before: no
# age limit, so a job waiting out a long outage is not lost. Its subjects stay clear of the events' `cbr.>`.
JOBS_STREAM = StreamConfig(name="CBR_JOBS", subjects=["jobs.cbr.>"], retention=RetentionPolicy.WORK_QUEUE,
                           duplicate_window=15 * 60.0)


def job_subject(operation_type: str) -> str:
    return f"jobs.cbr.{operation_type}"


def new_task(project_id: str, operation_type: str, **fields) -> Task:
    now = utcnow()
    return Task(task_id=str(uuid.uuid4()), project_id=project_id, operation_type=operation_type,
                status=lc.WAITING, created_time=now, updated_time=now, **fields)


async def enqueue(uow: BackupUnitOfWork, task: Task) -> None:
    """Records the task and queues its job, in the caller's transaction."""
    await uow.tasks.add(task)
    await uow.publish(job_pb2.Job(project_id=task.project_id, task_id=task.task_id,
                                  operation_type=task.operation_type), subject=job_subject(task.operation_type))

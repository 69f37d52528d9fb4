"""A backup worker: takes jobs from the CBR_JOBS work queue, one at a time, and runs them.

Leases: a job is JetStream's until the worker acks it; while it runs, the worker tells JetStream it is still
working (`in_progress`) and writes a heartbeat, progress and the cancel check to the task row every beat. A
worker that dies stops doing both: after `job_lease_seconds` JetStream delivers the job again, to any worker
(one whose owner still beats is left alone). Attempts are counted on the task row; the delivery after the last
one records the task as timed out. Failures a retry may cure (a peer or the database down, an I/O error) go
back with a growing delay; the others fail the task at once. A job is acked only once its task is final.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.errors import TimeoutError as NatsTimeoutError

from cbr.backup.v1 import job_pb2
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain.model import Task
from cbr_backup.service.jobs import JOBS_STREAM
from cbr_backup.service import outcomes
from cbr_backup.worker.context import JobCancelled, JobContext, JobSuperseded, Resources
from cbr_backup.worker.handlers import HANDLERS
from cbr_common import errors
from cbr_common.db import utcnow

log = logging.getLogger("cbr.worker")

CONSUMER = "workers"
RETRY_DELAYS = (1.0, 5.0, 30.0)  # seconds before a failed attempt goes again
# Errors no retry can cure: the request or the data is wrong, not the moment.
FINAL_ERRORS = (errors.InvalidArgumentError, errors.NotFoundError, errors.FailedPreconditionError,
                errors.ResourceExhaustedError, errors.DataLossError, errors.AlreadyExistsError)


@dataclass
class Worker:
    resources: Resources
    lease_seconds: float = 30.0
    attempts: int = 3
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    current: str = ""  # the task being run, for tests and logs

    def consumer_config(self) -> ConsumerConfig:
        # Unbounded deliveries: the attempts are counted on the task row, and a job must never be dropped
        # while its task is not final.
        return ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                              ack_wait=self.lease_seconds, max_deliver=-1, max_ack_pending=-1)

    async def run(self, js) -> None:
        """Takes jobs until cancelled; NATS being slow or away only delays it."""
        sub = None
        while sub is None:
            try:
                sub = await js.pull_subscribe("jobs.cbr.>", durable=CONSUMER, stream=JOBS_STREAM.name,
                                              config=self.consumer_config())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("subscribing to the job queue failed; trying again", exc_info=True)
                await asyncio.sleep(1.0)
        while True:
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except NatsTimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS restarting: the client reconnects by itself
                log.warning("fetching a job failed; trying again", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await self.handle(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database away, say: not acked, so the job comes back after its lease
                    log.exception("handling a job failed; it goes again after its lease")

    async def handle(self, msg) -> None:
        job = job_pb2.Job.FromString(msg.data)
        make_uow = self.resources.make_uow
        async with make_uow() as uow:
            task = await uow.tasks.get(job.project_id, job.task_id, for_update=True)
            if task is None or task.is_final:
                await msg.ack()  # done, or cancelled while it waited (and undone then)
                return
            if task.status == "running" and task.worker_id != self.worker_id and _fresh(task, self.lease_seconds):
                await msg.nak(delay=self.lease_seconds)  # another worker has it and is alive (a duplicate)
                return
            attempt = task.attempts + 1  # counted on the row: JetStream redelivers until the job is acked
            if task.extra_info.get("cancel_requested") or attempt > self.attempts:
                await uow.commit()
                if task.extra_info.get("cancel_requested"):
                    await outcomes.cancelled(make_uow, task)
                else:
                    await outcomes.failed(make_uow, task, "timeout", "BackupService.6760",
                                          f"the job's worker stopped answering {self.attempts} times")
                await msg.ack()
                return
            now = utcnow()
            task.extra_info = dict(task.extra_info, worker=self.worker_id, attempts=str(attempt))
            await uow.tasks.update_fields(task.task_id, status="running", attempts=attempt, worker_id=self.worker_id,
                                          started_time=task.started_time or now, heartbeat_time=now,
                                          error_code="", error_message="", extra_info=task.extra_info)
            await uow.commit()
        task.status, task.attempts, task.worker_id = "running", attempt, self.worker_id
        ctx = JobContext(self.resources, task, rate_limit_mbps=self.resources.rate_limit_mbps)
        beat = asyncio.create_task(self._beat(msg, ctx))
        self.current = task.task_id
        fields = {"task": task.task_id, "operation": task.operation_type, "attempt": attempt}
        log.info("job started", extra={"fields": fields})
        started = time.monotonic()
        try:
            await HANDLERS[task.operation_type](ctx)
            log.info("job done", extra={"fields": {**fields, "seconds": round(time.monotonic() - started, 3)}})
        except JobCancelled:
            await outcomes.cancelled(make_uow, task)
        except JobSuperseded:
            log.warning("job %s was taken over by another worker; this run's result is dropped", task.task_id)
        except FINAL_ERRORS as exc:
            await outcomes.failed(make_uow, task, "failed", exc.cbr_code or "", str(exc))
        except Exception as exc:
            if attempt < self.attempts:
                log.warning("job %s attempt %d failed; it goes again", task.task_id, attempt, exc_info=True)
                await outcomes.retry_later(make_uow, task, exc)
                beat.cancel()
                await msg.nak(delay=RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
                return
            log.exception("job %s failed on its last attempt", task.task_id)
            await outcomes.failed(make_uow, task, "failed", "BackupService.6761",
                                  f"failed after {attempt} attempts: {type(exc).__name__}: {exc}")
        finally:
            self.current = ""
            beat.cancel()
        await msg.ack()

    async def _beat(self, msg, ctx: JobContext) -> None:
        """Every third of the lease: keep the job, store progress, and notice a cancel."""
        interval = max(0.2, min(1.0, self.lease_seconds / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
                async with self.resources.make_uow() as uow:
                    latest = await uow.tasks.get(ctx.task.project_id, ctx.task.task_id)
                    done, total = ctx.progress_values()
                    values = {"heartbeat_time": utcnow(), "bytes_done": done, "bytes_total": total,
                              "progress": min(99, done * 100 // total) if total else 0}
                    await uow.tasks.update_fields(ctx.task.task_id, **values)
                    await uow.commit()
                if latest is None or latest.extra_info.get("cancel_requested"):
                    ctx.cancel()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("heartbeat of job %s failed", ctx.task.task_id, exc_info=True)


def _fresh(task: Task, lease_seconds: float) -> bool:
    """Its worker wrote a heartbeat within the lease: it is alive and still on it."""
    return task.heartbeat_time is not None and (utcnow() - task.heartbeat_time).total_seconds() < lease_seconds

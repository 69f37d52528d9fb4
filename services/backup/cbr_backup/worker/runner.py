"""A backup worker: takes jobs from the CBR_JOBS work queue, one at a time, and runs them.

Leases: a job is JetStream's until the worker acks it; while it runs, the worker tells JetStream it is still
working (`in_progress`) and writes a heartbeat, progress and the cancel check to the task row every beat. A
worker that dies stops doing both: after `job_lease_seconds` JetStream delivers the job again, to any worker.
Delivery number `attempts + 1` only records the task as timed out. Failures a retry may cure (a peer or the
database down, an I/O error) go back with a growing delay; the others fail the task at once.
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
from cbr_backup.worker.context import JobCancelled, JobContext, Resources
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
        return ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                              ack_wait=self.lease_seconds, max_deliver=self.attempts + 1, max_ack_pending=-1)

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
        delivered = msg.metadata.num_delivered
        make_uow = self.resources.make_uow
        async with make_uow() as uow:
            task = await uow.tasks.get(job.project_id, job.task_id, for_update=True)
            if task is None or (task.is_final and task.status != "cancelled"):
                await msg.ack()
                return
            if task.status == "cancelled":
                await uow.commit()
                await outcomes.cancelled(make_uow, task)
                await msg.ack()
                return
            if delivered > self.attempts:
                await uow.commit()
                await outcomes.failed(make_uow, task, "timeout", "BackupService.6760",
                                      f"the job's worker stopped answering {self.attempts} times")
                await msg.ack()
                return
            now = utcnow()
            task.extra_info = dict(task.extra_info, worker=self.worker_id, attempts=str(delivered))
            await uow.tasks.update_fields(task.task_id, status="running", attempts=delivered, worker_id=self.worker_id,
                                          started_time=task.started_time or now, heartbeat_time=now,
                                          error_code="", error_message="", extra_info=task.extra_info)
            await uow.commit()
        task.status, task.attempts = "running", delivered
        ctx = JobContext(self.resources, task, rate_limit_mbps=self.resources.rate_limit_mbps)
        beat = asyncio.create_task(self._beat(msg, ctx))
        self.current = task.task_id
        fields = {"task": task.task_id, "operation": task.operation_type, "attempt": delivered}
        log.info("job started", extra={"fields": fields})
        started = time.monotonic()
        try:
            await HANDLERS[task.operation_type](ctx)
            log.info("job done", extra={"fields": {**fields, "seconds": round(time.monotonic() - started, 3)}})
        except JobCancelled:
            await outcomes.cancelled(make_uow, task)
        except FINAL_ERRORS as exc:
            await outcomes.failed(make_uow, task, "failed", exc.cbr_code or "", str(exc))
        except Exception as exc:
            if delivered < self.attempts:
                log.warning("job %s attempt %d failed; it goes again", task.task_id, delivered, exc_info=True)
                await outcomes.retry_later(make_uow, task, exc)
                beat.cancel()
                await msg.nak(delay=RETRY_DELAYS[min(delivered, len(RETRY_DELAYS)) - 1])
                return
            log.exception("job %s failed on its last attempt", task.task_id)
            await outcomes.failed(make_uow, task, "failed", "BackupService.6761",
                                  f"failed after {delivered} attempts: {type(exc).__name__}: {exc}")
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
                    status = await _task_status(uow, ctx.task)
                    done, total = ctx.progress_values()
                    values = {"heartbeat_time": utcnow(), "bytes_done": done, "bytes_total": total,
                              "progress": min(99, done * 100 // total) if total else 0}
                    await uow.tasks.update_fields(ctx.task.task_id, **values)
                    await uow.commit()
                if status == "cancelled":
                    ctx.cancel()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("heartbeat of job %s failed", ctx.task.task_id, exc_info=True)


async def _task_status(uow: BackupUnitOfWork, task: Task) -> str:
    latest = await uow.tasks.get(task.project_id, task.task_id)
    return latest.status if latest is not None else "cancelled"


"""A backup worker: takes jobs from the CBR_JOBS work queue, one at a time, and runs them.

A thin runner: take the message, let service/lifecycle.py start the task, run its handler, let the lifecycle
record how it ended, ack. Leases: a job is JetStream's until the worker acks it; while it runs, the worker tells
JetStream it is still working (`in_progress`) and writes a heartbeat, progress and the cancel check to the task
row every beat. A worker that dies stops doing both: one lease after its last beat JetStream delivers the job
again, to any worker, which takes it over at once (domain/lifecycle.owner_alive). Attempts are counted on the
task row; the delivery after the last one records the task as timed out. Failures a retry may cure (an I/O
error, say) go back with a growing delay; an outage of the database or NATS gives its attempt back and the job
goes again soon after the dependency returns; the others fail the task at once. A job is acked only once its
task is final.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cbr.backup.v1 import job_pb2
from cbr_backup.service import lifecycle
from cbr_backup.service.jobs import JOBS_STREAM
from cbr_backup.service.lifecycle import Take
from cbr_backup.worker.context import JobCancelled, JobContext, JobSuperseded, Resources
from cbr_backup.worker.handlers import HANDLERS
from cbr_backup.worker.memory import give_back_freed_memory
from cbr_common import errors
from cbr_common.jetstream import client_closed, idle_or_down
from cbr_common.outages import is_outage, outage_log

log = logging.getLogger("cbr.worker")

CONSUMER = "workers"
RETRY_DELAYS = (1.0, 5.0, 30.0)  # seconds before a failed attempt goes again
OUTAGE_DELAY = 1.0               # a job an outage interrupted goes again this soon after it is recorded
OUTAGE_POLL = (0.5, 5.0)         # waiting for the database to record it: first and longest pause
# Errors no retry can cure: the request or the data is wrong, not the moment.
FINAL_ERRORS = (errors.InvalidArgumentError, errors.NotFoundError, errors.FailedPreconditionError,
                errors.ResourceExhaustedError, errors.DataLossError, errors.AlreadyExistsError,
                errors.PermissionDeniedError)


@dataclass
class Worker:
    resources: Resources
    lease_seconds: float = 30.0
    attempts: int = 3
    # The random part tells apart workers that share host name and pid: containers on the host's network (all pid 1).
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()[:40]}:{secrets.token_hex(3)}:{os.getpid()}")
    current: str = ""  # the task being run, for tests and logs
    outbox: Callable | None = None  # js -> OutboxRelay: the worker's events go out at once, not at a replica's poll

    def __post_init__(self):
        self._who = f"worker {self.worker_id} {id(self):x}"  # in-process test workers share a pid
        self._nats = outage_log("nats")
        self._db = outage_log("database")

    def consumer_config(self) -> ConsumerConfig:
        # Unbounded deliveries: the attempts are counted on the task row, and a job must never be dropped
        # while its task is not final.
        return ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                              ack_wait=self.lease_seconds, max_deliver=-1, max_ack_pending=-1)

    async def run(self, js) -> None:
        """Takes jobs until cancelled; NATS or the database being slow or away only delays it."""
        relay = asyncio.create_task(self.outbox(js).run()) if self.outbox else None
        try:
            await self._take_jobs(js)
        finally:
            if relay is not None:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)

    async def _take_jobs(self, js) -> None:
        sub = None
        while sub is None:
            try:
                sub = await js.pull_subscribe("jobs.cbr.>", durable=CONSUMER, stream=JOBS_STREAM.name,
                                              config=self.consumer_config())
                self._nats.ok(self._who)
            except Exception as exc:  # noqa: BLE001 - NATS restarting
                self._nats.failed(exc, self._who)
                await asyncio.sleep(1.0)
        while True:
            try:
                msgs = await sub.fetch(1, timeout=1.0)
                self._nats.ok(self._who)
            except TimeoutError:  # asyncio's and nats-py's timeouts alike
                idle_or_down(js, self._nats, self._who)
                continue
            except Exception as exc:  # noqa: BLE001 - NATS restarting: the client reconnects by itself
                if client_closed(js):
                    self._nats.ok(self._who)  # not an outage: the process is stopping
                    return
                self._nats.failed(exc, self._who)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await self.handle(msg)
                except Exception:  # noqa: BLE001 - a bug, not an outage: the job goes again after its lease
                    log.exception("handling a job failed; it goes again after its lease")

    async def handle(self, msg) -> None:
        job = job_pb2.Job.FromString(msg.data)
        try:
            taken, task = await lifecycle.take(self.resources.make_uow, job.project_id, job.task_id, self.worker_id,
                                               self.lease_seconds, self.attempts)
            self._db.ok(self._who)
        except Exception as exc:  # noqa: BLE001 - the database away: the job goes again soon, nothing counted
            if is_outage(exc):
                self._db.failed(exc, self._who)
                await _quietly(msg.nak(delay=OUTAGE_DELAY))
            else:
                log.exception("taking job %s failed", job.task_id)
                await _quietly(msg.nak(delay=self.lease_seconds))
            return
        if taken is Take.BUSY:
            await _quietly(msg.nak(delay=self.lease_seconds))  # another worker has it and is alive
            return
        if taken is Take.DONE:
            await _quietly(msg.ack())
            return
        if await self.run_job(msg, task):
            await _quietly(msg.ack())

    async def run_job(self, msg, task) -> bool:
        """Runs the handler and records how it ended. Returns whether the task is final (then the job is acked)."""
        make_uow = self.resources.make_uow
        ctx = JobContext(self.resources, task, rate_limit_mbps=self.resources.rate_limit_mbps)
        beat = asyncio.create_task(self._beat(msg, ctx))
        self.current = task.task_id
        fields = {"task": task.task_id, "operation": task.operation_type, "attempt": task.attempts}
        log.info("job started", extra={"fields": fields})
        started = time.monotonic()
        try:
            await HANDLERS[task.operation_type](ctx)
            log.info("job done", extra={"fields": {**fields, "seconds": round(time.monotonic() - started, 3)}})
            return True
        except JobCancelled:
            await self._record(lambda: lifecycle.cancel(make_uow, task))
            return True
        except JobSuperseded:
            log.warning("job %s was taken over by another worker; this run's result is dropped", task.task_id)
            return True
        except FINAL_ERRORS as exc:
            done, total = ctx.progress_values()
            await self._record(lambda: lifecycle.fail(make_uow, task, "failed", exc.cbr_code or "", str(exc),
                                                      done, total))
            return True
        except Exception as exc:  # noqa: BLE001
            beat.cancel()
            if is_outage(exc):
                self._db.failed(exc, self._who)
                log.info("job %s attempt %d cut short by an outage; it goes again when it is over",
                         task.task_id, task.attempts, extra={"fields": {**fields, "error": repr(exc)[:300]}})
                await self._record(lambda: lifecycle.give_back(make_uow, task, exc), msg)
                await _quietly(msg.nak(delay=OUTAGE_DELAY))
                return False
            if task.attempts < self.attempts:
                log.warning("job %s attempt %d failed; it goes again", task.task_id, task.attempts, exc_info=True)
                code = getattr(exc, "task_code", "BackupService.6761")
                await self._record(lambda: lifecycle.retry(make_uow, task, exc, code), msg)
                await _quietly(msg.nak(delay=RETRY_DELAYS[min(task.attempts, len(RETRY_DELAYS)) - 1]))
                return False
            log.exception("job %s failed on its last attempt", task.task_id)
            done, total = ctx.progress_values()
            code = getattr(exc, "task_code", "BackupService.6761")  # 6761: no more specific code
            await self._record(lambda: lifecycle.fail(make_uow, task, "failed", code,
                                              f"failed after {task.attempts} attempts: {type(exc).__name__}: {exc}",
                                              done, total))
            return True
        finally:
            self.current = ""
            beat.cancel()
            give_back_freed_memory()  # the next job's peak is its own, not this one's leftovers too

    async def _record(self, change: Callable[[], Awaitable[None]], msg=None) -> None:
        """Writes a job's outcome, waiting out a database outage (an outcome is never lost to one): the job stays
        leased meanwhile (in_progress) if NATS is there to hear it."""
        pause = OUTAGE_POLL[0]
        while True:
            try:
                await change()
                self._db.ok(self._who)
                return
            except Exception as exc:  # noqa: BLE001
                if not is_outage(exc):
                    raise
                self._db.failed(exc, self._who)
            if msg is not None:
                await _quietly(msg.in_progress())
            await asyncio.sleep(pause)
            pause = min(pause * 2, OUTAGE_POLL[1])

    async def _beat(self, msg, ctx: JobContext) -> None:
        """Every third of the lease at most: keep the job, store progress, and notice a cancel."""
        interval = max(0.2, min(1.0, self.lease_seconds / 3))
        while True:
            await asyncio.sleep(interval)
            await _quietly(msg.in_progress())
            try:
                done, total = ctx.progress_values()
                if await lifecycle.beat(self.resources.make_uow, ctx.task, done, total):
                    ctx.cancel()
                self._db.ok(self._who)
            except Exception as exc:  # noqa: BLE001 - the job itself meets the outage too and says so
                self._db.failed(exc, self._who)


async def _quietly(call) -> None:
    """Acks, naks and in_progress while NATS may be away: a lost one only means JetStream redelivers later."""
    try:
        await call
    except Exception:  # noqa: BLE001
        pass

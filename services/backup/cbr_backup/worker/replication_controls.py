"""A replication job's controls (DESIGN.md 17.11): a slot to its destination region before it sends, and the pace
of its chunk bytes: the smaller of the record's rate_limit_mbps and its share of the region pair's."""
from __future__ import annotations

import asyncio
import logging
import time

from cbr_backup.adapters.replication_jobs import ReplicationJob
from cbr_backup.adapters.replication_slots import live_holders, note_on_task, release_slot, take_slot
from cbr_backup.domain.replication_pace import SLOT_POLL, TokenBucket, effective_rate, waiting_note
from cbr_backup.worker.context import JobCancelled, JobContext
from cbr_common.db import utcnow
from cbr_common.errors import UnavailableError
from cbr_common.regions import Peer

log = logging.getLogger("cbr.worker")

SLOT_PATIENCE = 6 * 3600.0  # seconds a job waits for a slot before the attempt fails (and is retried)


class SlotWaitTooLongError(UnavailableError):
    """No slot to the destination freed within SLOT_PATIENCE: this attempt ends, the job machinery retries."""


class ReplicationControls:
    def __init__(self, ctx: JobContext, job: ReplicationJob, peer: Peer, clock=time.monotonic):
        self.ctx = ctx
        self.job = job
        self.peer = peer
        self.clock = clock
        self.lease_seconds = ctx.resources.lease_seconds
        self.bucket = TokenBucket(effective_rate(job.rate_limit_mbps, peer.rate_limit_mbps, 1), clock)
        self.slot_waits = 0   # looks that found every slot taken

    # The slot

    async def take_slot(self) -> None:
        """Waits (polling, no connection held between looks) until a slot to the destination is free, and takes
        it. The task is running meanwhile and its beat keeps its lease; a note on the task says why it waits."""
        task, pause, started, noted = self.ctx.task, SLOT_POLL[0], self.clock(), False
        while True:
            self._check_cancelled()
            async with self.ctx.make_uow() as uow:
                taken, others = await take_slot(uow.session, task.task_id, self.peer.name, self.peer.max_concurrent,
                                                self.lease_seconds)
                if not taken and not noted:
                    await note_on_task(uow.session, task.task_id,
                                       {"waiting": waiting_note(self.peer.name, others, self.peer.max_concurrent)})
                    noted = True
                if taken:
                    # The note goes; when the slot was taken stays (this host's UTC clock, as the tasks' times).
                    task.extra_info = dict(task.extra_info, slot_taken_time=utcnow().isoformat())
                    await note_on_task(uow.session, task.task_id, {"slot_taken_time": task.extra_info[
                        "slot_taken_time"]}, drop="waiting")
                await uow.commit()
            if taken:
                log.info("replication slot taken", extra={"fields": {
                    "task": task.task_id, "destination": self.peer.name, "others": others, "waits": self.slot_waits}})
                return
            self.slot_waits += 1
            if self.clock() - started > SLOT_PATIENCE:
                raise SlotWaitTooLongError(f"no replication slot to region {self.peer.name} freed in "
                                           f"{SLOT_PATIENCE:.0f} s ({others} of {self.peer.max_concurrent} taken)")
            await self._sleep(pause)
            pause = min(pause * 2, SLOT_POLL[1])

    async def release_slot(self) -> None:
        try:
            async with self.ctx.make_uow() as uow:
                await release_slot(uow.session, self.ctx.task.task_id)
                await uow.commit()
        except Exception as exc:  # noqa: BLE001 - the mark stops counting once the task ends anyway
            log.warning("releasing the replication slot failed; it frees with the task",
                        extra={"fields": {"task": self.ctx.task.task_id, "error": repr(exc)[:300]}})

    # The pace

    async def refresh_rate(self) -> None:
        """The rate for the next batch: the region pair's limit is shared by the replications running to that
        region now (counted at each batch, so a share grows when another ends)."""
        running = 1
        if self.peer.rate_limit_mbps > 0:
            async with self.ctx.make_uow() as uow:
                running = await live_holders(uow.session, self.peer.name, self.lease_seconds)
        self.bucket.set_rate(effective_rate(self.job.rate_limit_mbps, self.peer.rate_limit_mbps, running))

    async def pace(self, nbytes: int) -> None:
        """Before chunk payload of nbytes goes on the wire: waits its turn in the bucket."""
        await self._sleep(self.bucket.take(nbytes))

    def counters(self) -> dict[str, str]:
        """For the task's extra_info: the bucket's accounting (deterministic, unlike the time it took)."""
        account = self.bucket.account
        return {"rate_limit_bytes_per_second": str(int(self.bucket.rate)), "paced_bytes": str(account.paced_bytes),
                "throttle_waits": str(account.waits), "throttle_wait_ms": str(int(account.wait_seconds * 1000)),
                "slot_waits": str(self.slot_waits)}

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._check_cancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(0.2, left))

    def _check_cancelled(self) -> None:
        if self.ctx.cancelled:
            raise JobCancelled(f"task {self.ctx.task.task_id} was cancelled")

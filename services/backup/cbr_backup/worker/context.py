"""What a job handler works with: the worker's shared resources and one job's progress and cancel flag."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cbr_backup.adapters.chunk_index import ChunkIndex
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.datapath import ManifestCorruptError, VaultKeys
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.model import Task
from cbr_backup.keys import KeyProvider
from cbr_backup.providers.base import Provider
from cbr_backup.service.vault_keys import open_vault_keys
from cbr_common.regions import RegionDirectory


class JobCancelled(Exception):
    """The task was cancelled while its job ran; raised from the data path's progress callback."""


class JobSuperseded(Exception):
    """Another worker took the job over (this one was thought dead): this run must not record its result."""


@dataclass
class Resources:
    make_uow: Callable[[], BackupUnitOfWork]  # short statements (the lifecycle, heartbeats): RPC bounds
    database_url: str
    store: object           # a ChunkStore
    provider: Provider
    snapshot_dir: Path      # unused since the provider keeps its snapshots (DESIGN.md 16)
    key_provider: KeyProvider  # wraps the vaults' keys (CBR_KEK_FILE)
    rate_limit_mbps: float = 0.0
    make_job_uow: Callable[[], BackupUnitOfWork] | None = None  # the handlers': a job's statement budget
    regions: RegionDirectory | None = None  # the peer regions replication jobs send to (CBR_REGIONS_FILE)
    lease_seconds: float = 30.0  # CBR_JOB_LEASE_SECONDS: a replication slot counts while its task beat within it
    transfer_ttl_hours: float = 24.0  # CBR_REPLICATION_TRANSFER_TTL_HOURS: GC aborts open transfers idle this long
    peer_patience_seconds: float = 30.0  # CBR_REPLICATION_PEER_PATIENCE_SECONDS: a silent destination ends an attempt

    def open_index(self) -> ChunkIndex:
        return ChunkIndex(self.database_url)


class JobContext:
    def __init__(self, resources: Resources, task: Task, rate_limit_mbps: float = 0.0):
        self.resources = resources
        self.task = task
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._done = self._total = 0
        self._base_done = self._base_total = 0  # finished parts of a job with several (a server's disks)
        self._rate = rate_limit_mbps * 1e6
        self._started = time.monotonic()
        self._unpaced = 0  # bytes an earlier attempt did: progress, but not paced again
        self.run_id = uuid.uuid4().hex[:8]  # names what this run writes (a retry never meets an earlier run's)

    @property
    def store(self):
        return self.resources.store

    @property
    def make_uow(self):
        return self.resources.make_job_uow or self.resources.make_uow

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def resume_at(self, done: int) -> None:
        """The job goes on where an earlier attempt got to: done bytes count as progress, not for the pacing."""
        with self._lock:
            self._unpaced = done

    def progress(self, done: int, total: int) -> None:
        """The data path's callback (any thread): records progress, paces to the rate limit, stops if cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled(f"task {self.task.task_id} was cancelled")
        with self._lock:
            self._done, self._total = max(self._done, done), total
            overall = self._base_done + self._done
        if self._rate:
            ahead = (overall - self._unpaced) / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                self._cancelled.wait(ahead)  # a cancel ends the wait at once
                if self._cancelled.is_set():
                    raise JobCancelled(f"task {self.task.task_id} was cancelled")

    def expect(self, total: int) -> None:
        """Announces the bytes of the whole job before its first part starts."""
        with self._lock:
            self._base_total = total

    def part_done(self) -> None:
        with self._lock:
            self._base_done += self._total
            self._done = self._total = 0

    def progress_values(self) -> tuple[int, int]:
        with self._lock:
            done = self._base_done + self._done
            return done, max(self._base_total, self._base_done + self._total)

    async def keys(self, vault_id: str) -> VaultKeys:
        """The vault's keys, unwrapped for this job only (never stored in the clear); made if the vault has
        none yet, encrypted unless the job says the vault is not (`encrypted` in its params)."""
        async with self.make_uow() as uow:
            keys = await open_vault_keys(uow, self.resources.key_provider, vault_id,
                                         self.task.params.get("encrypted", True))
            await uow.commit()
        return keys

    async def backup_keys(self, backup) -> VaultKeys:
        """The keys a backup's chunks are read with: its vault's, or for a replica its namespace's id key (the
        source vault's) with the vault's data key, and the namespace's dictionaries (DESIGN.md 17.3, 17.4)."""
        keys = await self.keys(backup.vault_id)
        if not backup.namespace_id:
            return keys
        from cbr_backup.transfer.namespaces import open_namespace_keys
        async with self.make_uow() as uow:
            found = await open_namespace_keys(uow, self.resources.key_provider, keys, backup.vault_id,
                                              backup.namespace_id)
        if found is None:
            raise ManifestCorruptError(f"replica {backup.backup_id}: its namespace {backup.namespace_id} has no key")
        return found

    @contextlib.asynccontextmanager
    async def index(self, vault_id: str | None = None):
        """A chunk index connection of this job's own; with vault_id it holds the vault's shared lock, which
        tells GC a backup is running there (a killed worker's connection drops it)."""
        index = await asyncio.to_thread(self.resources.open_index)
        try:
            if vault_id is not None:
                await asyncio.to_thread(index.lock_vault, vault_id, False)
            yield index
        finally:
            await asyncio.to_thread(index.close)


async def check_still_mine(uow: BackupUnitOfWork, task: Task) -> None:
    """In the job's final transaction: the task, locked, is still this run's (not cancelled, not taken over by
    another worker that thought this one dead); otherwise the result is not recorded."""
    latest = await uow.tasks.get(task.project_id, task.task_id, for_update=True)
    if latest is None or latest.status == lc.CANCELLED or latest.extra_info.get("cancel_requested"):
        raise JobCancelled(f"task {task.task_id} was cancelled")
    if latest.status != lc.RUNNING or latest.attempts != task.attempts or latest.worker_id != task.worker_id:
        raise JobSuperseded(f"task {task.task_id} is another run's now")

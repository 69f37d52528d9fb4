"""The retained-base rules (DESIGN.md 14.2): which of a disk's snapshots the provider keeps after a backup.

A disk's snapshot is named by the (per-disk) backup that took it. It is kept while that backup runs, and
after it while that backup is the newest available backup of the disk in its vault: the base the next
incremental reads only the changes against. Every other snapshot is released: a superseded base, a base whose
backup was deleted, one of a backup that failed or was cancelled, one a killed worker left. The rules are
applied to a disk before each of its backups and after each completes, and when a backup is deleted, so a
leftover never outlives the disk's next backup, and a base is never released while it is still the base.
"""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("cbr.worker")

DISK = "disk"


async def keep_only_bases(ctx, project_id: str, disk_id: str, running: str = "") -> None:
    """Releases every snapshot of the disk that is neither a base nor of a backup still running (running: this
    job's own backup, whose snapshot a retry replaces)."""
    provider = ctx.resources.provider
    names = await provider.snapshot_names(project_id, disk_id)
    if not names:
        return
    async with ctx.make_uow() as uow:
        drop = [name for name in names if name != running and not await _kept(uow, project_id, disk_id, name)]
    for name in drop:
        await provider.release_snapshot(project_id, disk_id, name)
    if drop:
        log.info("snapshots released", extra={"fields": {"disk": disk_id, "released": len(drop)}})


async def _kept(uow, project_id: str, disk_id: str, name: str) -> bool:
    backup = await uow.backups.get_backup(project_id, name)
    if backup is None or backup.resource_id != disk_id:
        return False  # deleted, discarded on cancel, or not this disk's
    if backup.status == "protecting":
        return True   # running, or its retry will take the snapshot again
    latest = await uow.backups.latest_with_manifest(backup.vault_id, disk_id, DISK)
    return latest is not None and latest.backup_id == name


async def release_all(provider, project_id: str, snapshots) -> None:
    """Drops a job's own snapshots after it failed (its backup is no base); never raises over the job's error."""
    for snapshot in snapshots:
        with contextlib.suppress(Exception):
            await provider.release_snapshot(project_id, snapshot.disk_id, snapshot.name)



async def rebase(ctx, snapshots) -> None:
    """After the backup committed: its snapshots are the disks' bases now and the older ones go. The backup is
    done whatever happens here: a failure only leaves snapshots the disk's next backup releases."""
    task, provider = ctx.task, ctx.resources.provider
    try:
        for snapshot in snapshots:
            if not snapshot.change_base:  # a copy (no reflinks): it would cost a whole disk and tell nothing
                await provider.release_snapshot(task.project_id, snapshot.disk_id, snapshot.name)
            await keep_only_bases(ctx, task.project_id, snapshot.disk_id)
    except Exception:  # noqa: BLE001 - see above
        log.warning("releasing older snapshots failed", exc_info=True, extra={"fields": {"task": task.task_id}})

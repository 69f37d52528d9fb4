"""The retained-base rules (DESIGN.md 16.2): which of a disk's snapshots the provider keeps after a backup.

A disk's snapshot is named by the (per-disk) backup that took it. It is kept while that backup runs, and after
it while that backup is the newest available backup of the disk in its vault and the disk is still there: the
base the next incremental reads only the changes against. Every other snapshot is released: a superseded base,
a base whose backup was deleted, one of a disk that left the vault, one of a backup that failed or was
cancelled, one a killed worker left. The rules are applied to a disk before each of its backups and after each
completes, when a backup is deleted, when disks leave a vault; a deleted disk takes its snapshots with it.
So a base is never released while it is still the base, and a leftover never outlives the disk's next backup.
"""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("cbr.backup")

PROTECTING = "protecting"


async def keep_only_bases(make_uow, provider, project_id: str, disk_id: str, running: str = "") -> None:
    """Releases every snapshot of the disk that is neither a base nor of a backup still running (running: the
    calling job's own backup, whose snapshot its retry replaces)."""
    names = await provider.snapshot_names(project_id, disk_id)
    if not names:
        return
    async with make_uow() as uow:
        drop = [name for name in names if name != running and not await _is_base(uow, project_id, disk_id, name)]
    for name in drop:
        await provider.release_snapshot(project_id, disk_id, name)
    if drop:
        log.info("snapshots released", extra={"fields": {"disk": disk_id, "released": len(drop)}})


async def _is_base(uow, project_id: str, disk_id: str, name: str) -> bool:
    backup = await uow.backups.get_backup(project_id, name)
    if backup is None or backup.resource_id != disk_id:
        return False  # deleted, discarded on cancel, or not this disk's
    if backup.status == PROTECTING:
        return True   # running, or its retry will take the snapshot again
    latest = await uow.backups.latest_with_manifest(backup.vault_id, disk_id, backup.manifest_kind)
    return latest is not None and latest.backup_id == name


async def release_all(provider, project_id: str, snapshots) -> None:
    """Drops a job's own snapshots after it failed (its backup is no base); never raises over the job's error."""
    for snapshot in snapshots:
        with contextlib.suppress(Exception):
            await provider.release_snapshot(project_id, snapshot.disk_id, snapshot.name)


async def rebase(make_uow, provider, project_id: str, snapshots) -> None:
    """After the backup committed: its snapshots are the disks' bases now and the older ones go. The backup is
    done whatever happens here: a failure only leaves snapshots the disk's next backup releases."""
    try:
        for snapshot in snapshots:
            if not snapshot.change_base:  # a copy (no reflinks): it would cost a whole disk and tell nothing
                await provider.release_snapshot(project_id, snapshot.disk_id, snapshot.name)
            await keep_only_bases(make_uow, provider, project_id, snapshot.disk_id)
    except Exception:  # noqa: BLE001 - see above
        log.warning("releasing older snapshots failed", exc_info=True, extra={"fields": {"project": project_id}})


async def release_family(make_uow, provider, project_id: str, disk_ids) -> None:
    """After a backup (and its per-disk backups) was deleted: the disks' snapshots that are no base any more."""
    try:
        for disk_id in disk_ids:
            await keep_only_bases(make_uow, provider, project_id, disk_id)
    except Exception:  # noqa: BLE001 - the delete is done; the disks' next backups release what is left
        log.warning("releasing snapshots failed", exc_info=True, extra={"fields": {"project": project_id}})


async def release_left_vault(uow, provider, project_id: str, vault_id: str, resource_ids) -> None:
    """Resources left the vault: their disks' snapshots of backups in that vault are no bases any more (one of
    a backup still running stays; that backup's disk is released by its next backup or its deletion)."""
    disk_ids = []
    for resource_id in resource_ids:
        server = await uow.inventory.get_server(project_id, resource_id)
        disk_ids.extend([d.disk_id for d in server.disks] if server is not None else [resource_id])
    try:
        for disk_id in disk_ids:
            for name in await provider.snapshot_names(project_id, disk_id):
                backup = await uow.backups.get_backup(project_id, name)
                if backup is None or (backup.vault_id == vault_id and backup.status != PROTECTING):
                    await provider.release_snapshot(project_id, disk_id, name)
    except Exception:  # noqa: BLE001 - never redeliver the event for this: the disk's next backup releases them
        log.warning("releasing snapshots failed", exc_info=True, extra={"fields": {"vault": vault_id}})

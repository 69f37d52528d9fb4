"""What a local pool holds of a disk's backup snapshots, and a backup's task record: for the change-base tests."""
from __future__ import annotations

from cbr.backup.v1 import backup_pb2 as bp
from cbr_backup.providers.local import LocalProvider
from tests.support.backups import checkpoint, wait_success


def snapshots_of(services, project_id: str, disk_id: str) -> list[str]:
    """The disk's snapshots the pool holds (looked at beside the services, as an operator would)."""
    provider = LocalProvider(services.infra.base / "pool", services.infra.base / "fs")
    return provider._snapshot_names(project_id, disk_id)


async def backup_of(caller, vault_id: str) -> tuple[bp.Backup, dict]:
    """One checkpoint of a one-disk vault, waited for: its backup and its task's extra_info."""
    cp = await checkpoint(caller, vault_id)
    task = await wait_success(caller, cp.resources[0].task_id, timeout=600)
    backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=cp.resources[0].backup_id))).backup
    return backup, dict(task.extra_info)


async def settled_snapshots(services, project_id: str, disk_id: str, expected: list[str]) -> None:
    """Waits until the disk's snapshots are expected: a job releases older ones just after its task succeeds."""
    from tests.support.services import eventually

    async def check():
        assert sorted(snapshots_of(services, project_id, disk_id)) == sorted(expected)
        return True
    await eventually(check, timeout=20)

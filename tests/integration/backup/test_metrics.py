"""A worker process's /metrics after a real backup and restore: the job outcome counters, the backup's duration and
bytes exactly as its task and backup record them, the restore's bytes, and the store's free space; and the backup
service's sampled queue depth and each resource's newest backup."""
from __future__ import annotations

import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr_backup.adapters.metric_samples import job_sampler
from cbr_common import metrics
from cbr_devstack.ports import free_port
from tests.support.backups import checkpoint, fill, get_backup, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.metrics import scrape
from tests.support.services import eventually
from tests.support.workers import no_inprocess_workers, worker_processes  # noqa: F401 - a fixture


async def test_a_worker_process_reports_its_backup_and_restore(caller, no_inprocess_workers):
    services = no_inprocess_workers
    disk = await create_disk(caller, "measured", 8 * MIB)
    fill(disk.path, 0, 6, seed=31)
    vault = await create_vault(caller, "measured", DISK, BACKUP, resources=[ref(disk)])
    cp = await checkpoint(caller, vault.vault_id)
    sample = job_sampler(services.runtimes["backup"].db)
    await sample()  # no worker runs: the job waits
    assert metrics.QUEUE_DEPTH.value("backup") >= 1
    assert metrics.QUEUE_AGE.value("backup") >= 0

    address = f"127.0.0.1:{free_port()}"
    with worker_processes(services, 1, CBR_METRICS_ADDR=address):
        task = await wait_success(caller, cp.resources[0].task_id)
        backup = await get_backup(caller, cp.resources[0].backup_id)

        async def backup_counted():  # counted right after the commit the task's success shows
            scraped = await scrape(address)
            return scraped if scraped.value("cbr_jobs_total", type="backup", outcome="success") else None
        scraped = await eventually(backup_counted, timeout=20)
        assert scraped.value("cbr_jobs_total", type="backup", outcome="success") == 1
        assert scraped.value("cbr_jobs_total", type="backup", outcome="failed") == 0
        assert scraped.value("cbr_job_duration_seconds_count", type="backup", outcome="success") == 1
        ran = task.ended_time.ToDatetime() - task.started_time.ToDatetime()
        assert scraped.value("cbr_job_duration_seconds_sum", type="backup", outcome="success") == pytest.approx(
            ran.total_seconds(), abs=2e-6)
        assert scraped.value("cbr_backup_read_bytes_total") == int(task.extra_info["read_bytes"]) > 0
        assert scraped.value("cbr_backup_logical_bytes_total") == backup.logical_bytes == 6 * MIB
        assert scraped.value("cbr_backup_stored_bytes_total") == backup.added_bytes > 0
        assert scraped.value("cbr_store_free_bytes", path=str(services.infra.base / "store")) > 0

        made = await caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
            backup_id=backup.backup_id, name="from-measured"))
        restore = await wait_success(caller, made.task_id)

        async def restore_counted():
            scraped = await scrape(address)
            return scraped if scraped.value("cbr_jobs_total", type="restore", outcome="success") else None
        scraped = await eventually(restore_counted, timeout=20)
        assert scraped.value("cbr_restore_written_bytes_total") == int(restore.extra_info["written_bytes"]) > 0
        assert scraped.value("cbr_jobs_total", type="backup", outcome="success") == 1

    await sample()
    newest = metrics.LAST_BACKUP.value(vault.vault_id, disk.resource_id, "measured")
    assert newest == pytest.approx(backup.created_time.seconds + backup.created_time.nanos / 1e9, abs=1e-5)
    assert task.status == tp.TASK_STATUS_SUCCESS

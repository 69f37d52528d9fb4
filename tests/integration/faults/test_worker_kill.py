"""kill -9 of a worker process mid-backup: a worker already waiting takes the job over one lease after the dead
one's last heartbeat, not two, and the backup completes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from tests.support.backups import checkpoint, fill, get_backup, running_with_progress, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.services import JOB_LEASE_SECONDS, eventually


async def test_a_killed_workers_job_is_taken_over_after_one_lease(fault_caller, fault_services, capsys):
    caller, services = fault_caller, fault_services
    disk = await create_disk(caller, "kill9", 48 * MIB)
    fill(disk.path, 0, 40, seed=31)
    vault = await create_vault(caller, "kill9", DISK, BACKUP, resources=[ref(disk)])
    victim = subprocess.Popen([sys.executable, "-m", "cbr_backup.worker"],
                              env=services.worker_env(CBR_RATE_LIMIT_MBPS=8), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        first = await running_with_progress(caller, task_id)
        assert first.extra_info["worker"].endswith(f":{victim.pid}")
        survivor = await services.start_worker()  # idle, waiting for jobs
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)

        async def taken_over():
            task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
            return task.extra_info.get("worker") == survivor.worker_id and task
        await eventually(taken_over, timeout=10 * JOB_LEASE_SECONDS, interval=0.05)
        takeover = time.monotonic() - killed
        task = await wait_success(caller, task_id, timeout=120)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        await services.stop_workers()
    assert task.extra_info["attempts"] == "2" and task.extra_info["worker"] == survivor.worker_id
    assert (await get_backup(caller, backup_id)).status == bp.BACKUP_STATUS_AVAILABLE
    with capsys.disabled():
        print(f"\n[measured] kill -9 mid-backup: taken over {takeover:.1f} s after the kill "
              f"(lease {JOB_LEASE_SECONDS:g} s)")

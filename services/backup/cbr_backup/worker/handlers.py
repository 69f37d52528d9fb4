"""Which function runs which kind of job."""
from cbr_backup.worker.backup_job import run_backup
from cbr_backup.worker.maintenance import run_delete, run_gc, run_vault_delete, run_verify
from cbr_backup.worker.replicate_job import run_replication
from cbr_backup.worker.restore_job import run_restore

HANDLERS = {"backup": run_backup, "restore": run_restore, "delete": run_delete, "gc": run_gc, "verify": run_verify,
            "vault_delete": run_vault_delete, "replication": run_replication}

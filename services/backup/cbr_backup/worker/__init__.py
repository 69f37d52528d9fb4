"""Backup workers: `python -m cbr_backup.worker` takes jobs from the CBR_JOBS work queue (any number of them,
on any machine that reaches Postgres, NATS, the chunk store and the provider's disks)."""

"""cbr_backup: the backup service (protectable inventory and its local provider, tasks; backups to come)."""

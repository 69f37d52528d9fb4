"""cbr_policy: the policy service (backup and replication policies, the scheduler, retention)."""

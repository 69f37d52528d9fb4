"""cbr_replication: the replication service (replicas in other regions, the region-to-region transfer API)."""

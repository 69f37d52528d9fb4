"""CBR's benchmark harness: the standard workload, restic/borg/CBR runners, measurement and reports (make bench)."""

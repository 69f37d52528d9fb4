"""`python -m cbr_replication`: run the replication service."""
from cbr_common.runtime import run_service
from cbr_replication.bootstrap import start

run_service("replication", start)

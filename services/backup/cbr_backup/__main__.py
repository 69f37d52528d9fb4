"""`python -m cbr_backup`: run the backup service."""
from cbr_common.runtime import run_service
from cbr_backup.bootstrap import start

run_service("backup", start)

"""`python -m cbr_vault`: run the vault service."""
from cbr_common.runtime import run_service
from cbr_vault.bootstrap import start

run_service("vault", start)

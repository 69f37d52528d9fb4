"""`python -m cbr_policy`: run the policy service."""
from cbr_common.runtime import run_service
from cbr_policy.bootstrap import start

run_service("policy", start)

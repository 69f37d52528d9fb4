"""Replication tests run on two full regions (tests/support/regions.py)."""
from tests.support.regions import two_regions  # noqa: F401

"""A database of its own for the scheduler and retention tests (see tests/support/policy_rows.py)."""
from __future__ import annotations

import pytest

from cbr_common.db import Database
from cbr_policy.adapters.tables import metadata
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork


@pytest.fixture(scope="module")
def database_url(infra):
    """Its own database: the services' scheduler (on the real clock) must not see these policies."""
    return infra.fresh_database("cbr_policy")


@pytest.fixture
async def db(database_url):
    database = Database(database_url, metadata.schema)
    yield database
    await database.close()


@pytest.fixture
def make_uow(db):
    return lambda: PolicyUnitOfWork(db)

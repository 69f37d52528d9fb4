"""Integration fixtures: one private Postgres + NATS per session, real services over real sockets."""
from __future__ import annotations

import pytest

from tests.support.ceph import ceph  # noqa: F401  (a real Ceph cluster, started when a test asks for it)
from tests.support.regions import two_regions  # noqa: F401  (two full regions, started when a test asks)
from tests.support.services import Services
from tests.support.s3 import s3_server  # noqa: F401  (a moto server, started when a test asks for it)
from tests.support.stack import Infra


@pytest.fixture(scope="session")
def infra():
    infra = Infra.start()
    yield infra
    infra.stop()


@pytest.fixture(scope="session")
async def services(infra):
    services = await Services.start(infra)
    yield services
    await services.stop()


@pytest.fixture
def caller(services):
    """A full-access caller in a project of its own, so tests never see each other's objects."""
    return services.caller()

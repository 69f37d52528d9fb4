"""TLS to several replicas listed in one address: each one's certificate is checked against the first name (or IP)
listed, as every replica of a service presents the service's certificate."""
from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from cbr_common.peers import open_channel
from tests.integration.common.test_tls import health, pki, serve, settings  # noqa: F401 (pki: a fixture)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_tls_channel_reaches_every_replica_listed(pki, host):  # noqa: F811
    servers = [await serve(settings(tls_cert=pki["server_cert"], tls_key=pki["server_key"])) for _ in range(2)]
    try:
        address = ",".join(f"{host}:{server.port}" for server in servers)
        async with open_channel(settings(tls_ca=pki["ca"]), address) as channel:
            for _ in range(4):
                assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
        for server in servers[:1]:
            await server.stop(0)
        async with open_channel(settings(tls_ca=pki["ca"]), address) as channel:
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING  # the one left
    finally:
        for server in servers:
            await server.stop(0)

"""gRPC server assembly: interceptor, health, reflection, keepalive, size limits, TLS, graceful stop on SIGTERM."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cbr_common import audit
from cbr_common.auth import Authenticator
from cbr_common.interceptor import CallGuard
from cbr_common.metrics import RpcMetrics
from cbr_common.settings import Settings

log = logging.getLogger("cbr.server")

GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to serve: the generated add_*_to_server function, the servicer, its full name."""
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str  # e.g. "cbr.vault.v1.VaultService"


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_idle_ms", 30 * 60_000),
    ]


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not (settings.tls_cert and settings.tls_key):
        return None
    with open(settings.tls_key, "rb") as f:
        key = f.read()
    with open(settings.tls_cert, "rb") as f:
        cert = f.read()
    client_ca = None
    if settings.tls_client_ca:
        with open(settings.tls_client_ca, "rb") as f:
            client_ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


class RunningServer:
    def __init__(self, server: grpc.aio.Server, health_servicer: health.HealthServicer, port: int,
                 names: Sequence[str]):
        self.server = server
        self.health = health_servicer
        self.port = port
        self._names = names

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        for name in ("", *self._names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


async def start_transfer_listener(settings: Settings, binding: ServiceBinding) -> RunningServer | None:
    """The region-to-region listener (CBR_TRANSFER_LISTEN_ADDR): one service, its own certificate, no client
    certificate (peers authenticate with their region_peer token). None when not configured."""
    if not settings.transfer_listen_addr:
        return None
    own = dataclasses.replace(settings, listen_addr=settings.transfer_listen_addr, tls_cert=settings.transfer_tls_cert,
                              tls_key=settings.transfer_tls_key, tls_client_ca="")
    return await start_server(own, [binding])


async def start_server(settings: Settings, bindings: Sequence[ServiceBinding], audit_db=None) -> RunningServer:
    """audit_db: the service's Database, whose outbox takes the audit trail (cbr_common.audit); None: no trail."""
    server = grpc.aio.server(interceptors=[RpcMetrics(), *audit.interceptors(audit_db),  # it sees guard refusals
                                           CallGuard(Authenticator.for_settings(settings))],
                             options=server_options(settings))
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.full_name for b in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    credentials = _server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.listen_addr)
    else:
        port = server.add_secure_port(settings.listen_addr, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen_addr}")
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"fields": {"port": port, "services": names, "tls": credentials is not None}})
    return RunningServer(server, health_servicer, port, names)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs `main(stop_event)`; SIGTERM or SIGINT sets the event so main can stop gracefully."""
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)
    asyncio.run(runner())

"""A running service: database, event bus, outbox relay, consumers and gRPC server, started and stopped as one."""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from cbr_common import jetstream, metrics
from cbr_common.db import Database
from cbr_common.logs import configure_logging
from cbr_common.outbox import OutboxRelay
from cbr_common.server import RunningServer, ServiceBinding, run_until_signalled, start_server
from cbr_common.settings import Settings, SettingsError

log = logging.getLogger("cbr.runtime")


@dataclass
class ServiceRuntime:
    settings: Settings
    db: Database
    nats: object
    js: object
    relay: OutboxRelay
    server: RunningServer | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    samplers: list[metrics.Sampler] = field(default_factory=list)  # gauges read from the database (metrics.py)

    @property
    def address(self) -> str:
        return f"{self.settings.listen_addr.rpartition(':')[0]}:{self.server.port}"

    def spawn(self, coro, name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for close in reversed(self.closers):
            await close()
        await self.nats.close()
        await self.db.close()


async def open_runtime(settings: Settings, metadata) -> ServiceRuntime:
    """Connects to Postgres and NATS and starts the outbox relay; the service then adds its server."""
    db = settings.database(metadata.schema)
    nc, js = await jetstream.connect(settings.nats_url, settings.nats_replicas)
    relay = OutboxRelay(db, metadata, js, poll_seconds=settings.outbox_poll_seconds)
    runtime = ServiceRuntime(settings=settings, db=db, nats=nc, js=js, relay=relay,
                             samplers=[metrics.outbox_sampler(db, metadata)])
    runtime.spawn(relay.run(), "outbox-relay")
    return runtime


async def serve(runtime: ServiceRuntime, bindings: Sequence[ServiceBinding]) -> ServiceRuntime:
    runtime.server = await start_server(runtime.settings, bindings, audit_db=runtime.db)
    if (exporter := metrics.export(runtime.settings, runtime.samplers)) is not None:  # CBR_METRICS_ADDR
        runtime.closers.append(exporter.close)
    return runtime


def run_service(service: str, start: Callable[[Settings], Awaitable[ServiceRuntime]]) -> None:
    """`python -m cbr_<service>`: settings from the environment, serve until SIGTERM, then stop gracefully."""
    try:
        settings = Settings.from_env(service)
    except SettingsError as exc:
        print(f"cbr_{service}: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(service, settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        runtime = await start(settings)
        log.info("started", extra={"fields": {"address": runtime.address}})
        await stop.wait()
        log.info("stopping")
        await runtime.stop()

    try:
        run_until_signalled(main)
    except SettingsError as exc:  # found by the service's own wiring (its folders, its key file)
        print(f"cbr_{service}: {exc}", file=sys.stderr)
        sys.exit(2)

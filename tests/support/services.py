"""The four CBR services started in the test's event loop on port 0, and stubs that carry a bearer token."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import grpc

from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
from cbr.policy.v1 import policy_pb2_grpc
from cbr.replication.v1 import replication_pb2_grpc
from cbr.vault.v1 import vault_pb2_grpc
from cbr_common.auth import issue_token
from cbr_common.settings import Settings
from cbr_common.runtime import ServiceRuntime

STUBS = {
    "vault": (vault_pb2_grpc.VaultServiceStub, "vault"),
    "protectables": (protectable_pb2_grpc.ProtectableServiceStub, "backup"),
    "tasks": (task_pb2_grpc.TaskServiceStub, "backup"),
    "backups": (backup_pb2_grpc.BackupServiceStub, "backup"),
    "policies": (policy_pb2_grpc.PolicyServiceStub, "policy"),
    "replication": (replication_pb2_grpc.ReplicationServiceStub, "replication"),
}


JOB_LEASE_SECONDS = 3.0  # short, so a killed worker's job goes again within the tests' patience


def settings_for(infra, service: str, peers: dict[str, str], listen_addr: str = "127.0.0.1:0", **extra) -> Settings:
    """extra: further settings of the whole stack, e.g. region and regions_file (tests/support/regions.py)."""
    return Settings(**extra, service=service, database_url=infra.postgres.url, nats_url=infra.nats.url,
                    jwt_secret=infra.jwt_secret, listen_addr=listen_addr, peers=dict(peers),
                    pool_dir=str(infra.base / "pool"), fs_root=str(infra.base / "fs"),
                    store_dir=str(infra.base / "store"), kek_file=str(kek_file(infra)), outbox_poll_seconds=0.2,
                    job_lease_seconds=JOB_LEASE_SECONDS,
                    # The scheduler runs on the real clock in tests/e2e (its own stacks); here it would fire the
                    # policies the API tests make whenever a test crosses their hour.
                    scheduler_interval_seconds=0.0,
                    # The replication lag check runs where a test drives it (a hand-moved clock), not in a loop.
                    replication_lag_alert_seconds=0.0)


def kek_file(infra):
    """The test session's key-encryption key (made once, mode 0600)."""
    from cbr_backup.keys import create_kek_file
    return create_kek_file(infra.base / "kek")


@dataclass
class Services:
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, grpc.aio.Channel]
    jwt_secret: str
    infra: object
    peers: dict[str, str]
    workers: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # settings every service and worker of this stack gets  # (Worker, asyncio.Task, Database) run in this loop

    @classmethod
    async def start(cls, infra, workers: int = 1, peers: dict[str, str] | None = None, **extra) -> "Services":
        """peers: addresses chosen beforehand (e.g. a backup service another region names); extra: settings."""
        from cbr_backup.bootstrap import start as start_backup
        from cbr_policy.bootstrap import start as start_policy
        from cbr_replication.bootstrap import start as start_replication
        from cbr_vault.bootstrap import start as start_vault
        from cbr_devstack.ports import free_port

        # Ports chosen first: the vault and backup services call each other.
        names = ("backup", "policy", "vault", "replication")
        peers = {name: f"127.0.0.1:{free_port()}" for name in names} | dict(peers or {})
        runtimes: dict[str, ServiceRuntime] = {}
        for name, start in zip(names, (start_backup, start_policy, start_vault, start_replication)):
            runtimes[name] = await start(settings_for(infra, name, peers, listen_addr=peers[name], **extra))
        channels = {name: grpc.aio.insecure_channel(rt.address) for name, rt in runtimes.items()}
        services = cls(runtimes, channels, infra.jwt_secret, infra, peers, extra=dict(extra))
        for _ in range(workers):
            await services.start_worker()
        return services

    async def start_worker(self, rate_limit_mbps: float = 0.0, **settings_changes):
        """A backup worker in this event loop (its data path runs on threads); rate_limit_mbps slows its jobs
        down so that a test can act while one runs; settings_changes e.g. store_url."""
        import asyncio
        import dataclasses
        from cbr_backup.adapters.tables import metadata
        from cbr_backup.worker.main import worker_for
        from cbr_common.db import Database

        db = Database(self.infra.postgres.url, metadata.schema, pool_size=2)
        settings = dataclasses.replace(settings_for(self.infra, "worker", self.peers, **self.extra),
                                       rate_limit_mbps=rate_limit_mbps,
                                       **settings_changes)
        worker = worker_for(settings, db)
        task = asyncio.create_task(worker.run(self.runtimes["backup"].js))
        self.workers.append((worker, task, db))
        return worker

    async def stop_workers(self) -> None:
        """Stops every in-process worker (between jobs: callers make sure none is running one)."""
        import asyncio
        import contextlib
        workers, self.workers = self.workers, []
        for _, task, db in workers:
            # Cancelled again until it ends: Python 3.11's wait_for (inside nats-py's fetch) swallows a cancel that
            # lands as a message arrives, and the worker would then take jobs forever.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await db.close()

    def worker_env(self, **overrides) -> dict:
        """The environment of a `python -m cbr_backup.worker` process on this test stack."""
        import os
        infra = self.infra
        env = dict(os.environ, CBR_DATABASE_URL=infra.postgres.url, CBR_NATS_URL=infra.nats.url,
                   CBR_JWT_SECRET=infra.jwt_secret, CBR_POOL_DIR=str(infra.base / "pool"),
                   CBR_FS_ROOT=str(infra.base / "fs"), CBR_STORE_DIR=str(infra.base / "store"),
                   CBR_KEK_FILE=str(kek_file(infra)),
                   CBR_JOB_LEASE_SECONDS=str(JOB_LEASE_SECONDS), PYTHONUNBUFFERED="1")
        env.update({f"CBR_{name.upper()}": str(value) for name, value in self.extra.items()})
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    async def stop(self) -> None:
        await self.stop_workers()
        for channel in self.channels.values():
            await channel.close()
        for runtime in reversed(list(self.runtimes.values())):
            await runtime.stop(grace=1.0)

    def token(self, project_id: str, roles=("cbr_full_access",), ttl: int = 600, secret: str | None = None) -> str:
        return issue_token(secret or self.jwt_secret, project_id=project_id, subject="tester", roles=list(roles),
                           ttl_seconds=ttl)

    def caller(self, project_id: str | None = None, roles=("cbr_full_access",), token: str | None = None) -> "Caller":
        project_id = project_id or f"project-{uuid.uuid4().hex[:12]}"
        metadata = () if token == "" else (("authorization", f"Bearer {token or self.token(project_id, roles)}"),)
        return Caller(project_id, {name: _Authed(stub(self.channels[svc]), metadata)
                                   for name, (stub, svc) in STUBS.items() if svc in self.channels})


class _Authed:
    """A stub whose every call carries the caller's metadata and a deadline."""

    def __init__(self, stub, metadata):
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, method):
        call = getattr(self._stub, method)

        def invoke(request, **kwargs):
            kwargs.setdefault("metadata", self._metadata)
            kwargs.setdefault("timeout", 10)
            return call(request, **kwargs)
        return invoke


class Caller:
    def __init__(self, project_id: str, stubs: dict[str, _Authed]):
        self.project_id = project_id
        for name, stub in stubs.items():
            setattr(self, name, stub)


async def eventually(check, timeout: float = 10.0, interval: float = 0.1):
    """Awaits `check()` until it returns a truthy value or raises nothing; bounded by `timeout`."""
    import asyncio
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
            error = AssertionError("condition still false")
        except (AssertionError, grpc.aio.AioRpcError) as exc:
            error = exc
        if time.monotonic() > deadline:
            raise error
        await asyncio.sleep(interval)

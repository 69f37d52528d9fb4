"""The four CBR services started in the test's event loop on port 0, and stubs that carry a bearer token."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import grpc

from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
from cbr.policy.v1 import policy_pb2_grpc
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
}


def settings_for(infra, service: str, peers: dict[str, str]) -> Settings:
    return Settings(service=service, database_url=infra.postgres.url, nats_url=infra.nats.url,
                    jwt_secret=infra.jwt_secret, listen_addr="127.0.0.1:0", peers=dict(peers),
                    pool_dir=str(infra.base / "pool"), fs_root=str(infra.base / "fs"),
                    outbox_poll_seconds=0.2)


@dataclass
class Services:
    runtimes: dict[str, ServiceRuntime]
    channels: dict[str, grpc.aio.Channel]
    jwt_secret: str

    @classmethod
    async def start(cls, infra) -> "Services":
        from cbr_backup.bootstrap import start as start_backup
        from cbr_policy.bootstrap import start as start_policy
        from cbr_vault.bootstrap import start as start_vault

        runtimes: dict[str, ServiceRuntime] = {}
        peers: dict[str, str] = {}
        # The backup service first: the vault service calls its ProtectableService.
        for name, start in (("backup", start_backup), ("policy", start_policy), ("vault", start_vault)):
            runtimes[name] = await start(settings_for(infra, name, peers))
            peers[name] = runtimes[name].address
        channels = {name: grpc.aio.insecure_channel(rt.address) for name, rt in runtimes.items()}
        return cls(runtimes, channels, infra.jwt_secret)

    async def stop(self) -> None:
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
                                   for name, (stub, svc) in STUBS.items()})


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

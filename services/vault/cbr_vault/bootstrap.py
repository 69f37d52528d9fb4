"""Wires the vault service from one Settings: database, events, peers and the gRPC servicer."""
from __future__ import annotations

from cbr.vault.v1 import vault_pb2_grpc
from cbr_common.jetstream import EventConsumer
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_vault.adapters.policies import GrpcPolicyDirectory
from cbr_vault.adapters.protectables import GrpcProtectableDirectory, ProtectableDirectory
from cbr_vault.adapters.metric_samples import usage_sampler
from cbr_vault.adapters.tables import metadata
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.grpc_api.servicer import VaultServicer
from cbr_vault.service import audit
from cbr_vault.service.events import SUBSCRIPTIONS

SERVICE_NAME = "cbr.vault.v1.VaultService"


async def start(settings: Settings, directory: ProtectableDirectory | None = None) -> ServiceRuntime:
    runtime = await open_runtime(settings, metadata)
    if directory is None:
        directory = GrpcProtectableDirectory(settings)
        runtime.closers.append(directory.close)

    def make_uow() -> VaultUnitOfWork:
        return VaultUnitOfWork(runtime.db)

    policies = None
    if settings.peers.get("policy"):
        policies = GrpcPolicyDirectory(settings)
        runtime.closers.append(policies.close)
    consumer = EventConsumer(runtime.js, "vault", SUBSCRIPTIONS, make_uow, metadata)
    runtime.spawn(consumer.run(), "vault-events")
    runtime.samplers.append(usage_sampler(runtime.db))
    audit_trail = EventConsumer(runtime.js, audit.CONSUMER, audit.SUBSCRIPTIONS, make_uow, metadata)
    runtime.spawn(audit_trail.run(), "vault-audit")
    servicer = VaultServicer(make_uow, directory, policies)
    return await serve(runtime, [ServiceBinding(vault_pb2_grpc.add_VaultServiceServicer_to_server, servicer,
                                                SERVICE_NAME)])

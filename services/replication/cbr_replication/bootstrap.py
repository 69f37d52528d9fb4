"""Wires the replication service. Its RPCs answer UNIMPLEMENTED until the replication issue fills them in."""
from __future__ import annotations

from cbr.replication.v1 import replication_pb2_grpc as rpc
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_replication.adapters.tables import metadata


async def start(settings: Settings) -> ServiceRuntime:
    runtime = await open_runtime(settings, metadata)
    return await serve(runtime, [
        ServiceBinding(rpc.add_ReplicationServiceServicer_to_server, rpc.ReplicationServiceServicer(),
                       "cbr.replication.v1.ReplicationService"),
        ServiceBinding(rpc.add_RegionTransferServiceServicer_to_server, rpc.RegionTransferServiceServicer(),
                       "cbr.replication.v1.RegionTransferService"),
    ])

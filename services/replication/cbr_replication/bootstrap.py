"""Wires the replication service: capabilities answer from the region directory (CBR_REGIONS_FILE); the other
RPCs answer UNIMPLEMENTED until the replication issue fills them in."""
from __future__ import annotations

from cbr.replication.v1 import replication_pb2_grpc as rpc
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_replication.adapters.tables import metadata
from cbr_common.regions import load_regions
from cbr_replication.grpc_api.servicer import RegionTransferServicer, ReplicationServicer


async def start(settings: Settings) -> ServiceRuntime:
    regions = load_regions(settings.regions_file, settings.region)  # a bad directory stops the start, before any I/O
    runtime = await open_runtime(settings, metadata)
    return await serve(runtime, [
        ServiceBinding(rpc.add_ReplicationServiceServicer_to_server, ReplicationServicer(regions),
                       "cbr.replication.v1.ReplicationService"),
        ServiceBinding(rpc.add_RegionTransferServiceServicer_to_server, RegionTransferServicer(),
                       "cbr.replication.v1.RegionTransferService"),
    ])

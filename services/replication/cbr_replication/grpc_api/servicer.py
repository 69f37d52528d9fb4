"""ReplicationService: capabilities answer from the region directory; the rest waits for the data plane
(services/backup/DESIGN.md section 17) and says so."""
from __future__ import annotations

import grpc

from cbr.replication.v1 import replication_pb2, replication_pb2_grpc
from cbr_common.regions import RegionDirectory

NOT_YET = ("{rpc} is not implemented yet: replication between regions is being built (issue 12); "
           "only GetReplicationCapabilities answers today")


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, regions: RegionDirectory):
        self._regions = regions

    async def GetReplicationCapabilities(self, request, context):
        # Only what this region's own configuration knows: its name and the peers it may replicate to.
        return replication_pb2.GetReplicationCapabilitiesResponse(regions=[
            replication_pb2.ReplicationRegion(name=self._regions.local,
                                              replication_destinations=self._regions.destinations)])

    async def ReplicateBackup(self, request, context):
        await _not_yet(context, "ReplicateBackup")

    async def ReplicateCheckpoint(self, request, context):
        await _not_yet(context, "ReplicateCheckpoint")

    async def GetReplicationRecord(self, request, context):
        await _not_yet(context, "GetReplicationRecord")

    async def ListReplicationRecords(self, request, context):
        await _not_yet(context, "ListReplicationRecords")


class RegionTransferServicer(replication_pb2_grpc.RegionTransferServiceServicer):
    """Moves to the destination's backup service (DESIGN section 17.2); until then every call is refused."""

    async def BeginTransfer(self, request, context):
        await _not_yet(context, "BeginTransfer")

    async def FindMissingChunks(self, request, context):
        await _not_yet(context, "FindMissingChunks")

    async def PutChunks(self, request_iterator, context):
        await _not_yet(context, "PutChunks")

    async def PutManifest(self, request_iterator, context):
        await _not_yet(context, "PutManifest")

    async def CommitTransfer(self, request, context):
        await _not_yet(context, "CommitTransfer")

    async def AbortTransfer(self, request, context):
        await _not_yet(context, "AbortTransfer")


async def _not_yet(context, rpc: str) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_YET.format(rpc=rpc))

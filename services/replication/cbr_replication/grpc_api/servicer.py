"""ReplicationService over gRPC: convert, call the use case, convert back. Errors leave through cbr_common's table.
RegionTransferService is not here: the destination's backup service serves it (DESIGN 17.2)."""
from __future__ import annotations

from typing import Callable

from cbr.replication.v1 import replication_pb2 as pb
from cbr.replication.v1 import replication_pb2_grpc
from cbr_common.auth import current_principal
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.grpc_api import convert
from cbr_replication.service import records, replicate
from cbr_replication.service.replicate import Peers


def _project() -> str:
    return current_principal().project_id


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, make_uow: Callable[[], ReplicationUnitOfWork], peers: Peers):
        self._uow = make_uow
        self._peers = peers

    async def ReplicateBackup(self, request, context):
        record = await replicate.replicate_backup(convert.replicate_backup_in(_project(), request), self._uow,
                                                  self._peers)
        return pb.ReplicateBackupResponse(replication_record_id=record.replication_record_id, task_id=record.task_id,
                                          status=convert.status_out(record.status))

    async def ReplicateCheckpoint(self, request, context):
        made = await replicate.replicate_checkpoint(convert.replicate_checkpoint_in(_project(), request), self._uow,
                                                    self._peers)
        return pb.ReplicateCheckpointResponse(backups=[
            pb.ReplicatedBackup(backup_id=r.source_backup_id, replication_record_id=r.replication_record_id,
                                task_id=r.task_id) for r in made])

    async def GetReplicationRecord(self, request, context):
        record = await records.get_record(_project(), request.replication_record_id, self._uow())
        return pb.GetReplicationRecordResponse(replication_record=convert.record_out(record))

    async def ListReplicationRecords(self, request, context):
        found, count = await records.list_records(convert.list_records_in(_project(), request), request.page.limit,
                                                  request.page.offset, self._uow())
        return pb.ListReplicationRecordsResponse(replication_records=[convert.record_out(r) for r in found],
                                                 count=count)

    async def GetReplicationLag(self, request, context):
        lags = await records.replication_lag(_project(), request.vault_id, request.destination_region, self._uow(),
                                             self._peers)
        return pb.GetReplicationLagResponse(lags=[convert.lag_out(lag) for lag in lags])

    async def GetReplicationCapabilities(self, request, context):
        # Only what this region's own configuration knows: its name and the peers it may replicate to.
        regions = self._peers.regions
        return pb.GetReplicationCapabilitiesResponse(regions=[
            pb.ReplicationRegion(name=regions.local, replication_destinations=regions.destinations)])

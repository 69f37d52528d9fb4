"""Protobuf messages <-> replication domain objects and commands."""
from __future__ import annotations

from cbr.common.v1 import common_pb2
from cbr.replication.v1 import replication_pb2 as pb
from cbr_common.proto_enums import enum_name, enum_value
from cbr_replication.adapters.repository import RecordFilter
from cbr_replication.domain.lag import Lag
from cbr_replication.domain.model import Destination, ReplicationRecord
from cbr_replication.service.replicate import ReplicateBackup, ReplicateCheckpoint


def replicate_backup_in(project_id: str, req: pb.ReplicateBackupRequest) -> ReplicateBackup:
    return ReplicateBackup(project_id=project_id, backup_id=req.backup_id, destination=_destination(req),
                           name=req.name, description=req.description, request_id=req.request_id,
                           rate_limit_mbps=req.rate_limit_mbps)


def replicate_checkpoint_in(project_id: str, req: pb.ReplicateCheckpointRequest) -> ReplicateCheckpoint:
    # auto_trigger from a caller marks the records as a policy's would, but without a policy no retention
    # rule travels: only the policy ticks (service/policy_ticks.py) carry one.
    return ReplicateCheckpoint(project_id=project_id, vault_id=req.vault_id, destination=_destination(req),
                               auto_trigger=req.auto_trigger, request_id=req.request_id,
                               rate_limit_mbps=req.rate_limit_mbps)


def list_records_in(project_id: str, req: pb.ListReplicationRecordsRequest) -> RecordFilter:
    return RecordFilter(project_id=project_id, source_vault_id=req.source_vault_id,
                        source_backup_id=req.source_backup_id, destination_vault_id=req.destination_vault_id,
                        destination_backup_id=req.destination_backup_id,
                        status=enum_name(pb.ReplicationStatus, req.status))


def _destination(req) -> Destination:
    return Destination(req.destination_region, req.destination_project_id, req.destination_vault_id)


def status_out(status: str) -> int:
    return enum_value(pb.ReplicationStatus, status)


def record_out(r: ReplicationRecord) -> pb.ReplicationRecord:
    c = r.counters
    out = pb.ReplicationRecord(
        replication_record_id=r.replication_record_id, project_id=r.project_id, source_region=r.source_region,
        source_vault_id=r.source_vault_id, source_backup_id=r.source_backup_id,
        destination_region=r.destination.region, destination_project_id=r.destination.project_id,
        destination_vault_id=r.destination.vault_id, destination_backup_id=r.destination_backup_id,
        status=status_out(r.status), progress=r.progress, bytes_done=r.bytes_done,
        bytes_total=r.bytes_total, transferred_bytes=r.transferred_bytes, task_id=r.task_id,
        auto_trigger=r.auto_trigger, policy_id=r.policy_id, name=r.name, description=r.description,
        request_id=r.request_id,
        counters=pb.ReplicationCounters(chunk_bytes_sent=c.chunk_bytes_sent, present_bytes=c.present_bytes,
                                        resent_bytes=c.resent_bytes, metadata_bytes=c.metadata_bytes,
                                        chunks_sent=c.chunks_sent, chunks_present=c.chunks_present),
        source_manifest_digest=r.source_manifest_digest, replica_manifest_digest=r.replica_manifest_digest,
        resource_type=enum_value(common_pb2.ObjectType, r.resource_type), resource_id=r.resource_id,
        rate_limit_mbps=r.rate_limit_mbps)
    if r.error_code or r.error_message:
        out.error.CopyFrom(pb.ReplicationError(code=r.error_code, message=r.error_message))
    for field, when in (("created_time", r.created_time), ("started_time", r.started_time),
                        ("ended_time", r.ended_time), ("updated_time", r.updated_time)):
        if when is not None:
            getattr(out, field).FromDatetime(when)
    return out


def lag_out(lag: Lag) -> pb.ReplicationLag:
    out = pb.ReplicationLag(resource_id=lag.resource_id,
                            resource_type=enum_value(common_pb2.ObjectType, lag.resource_type),
                            destination_region=lag.destination_region, lag_seconds=int(lag.lag.total_seconds()),
                            unreplicated_backups=lag.unreplicated_backups,
                            newest_replicated_backup_id=lag.newest_replicated_backup_id)
    oldest = lag.oldest_unreplicated
    if oldest is not None:
        out.oldest_unreplicated_backup_id = oldest.backup_id
        if oldest.created_time is not None:
            out.oldest_unreplicated_time.FromDatetime(oldest.created_time)
    return out

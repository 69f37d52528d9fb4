"""ReplicateBackup and ReplicateCheckpoint: every rule and the destination's check first, then one transaction
writes the record (WAITING) and the ReplicationRequested event the backup service turns into a task."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.exc import IntegrityError

from cbr.events.v1 import replication_events_pb2 as ev
from cbr.replication.v1 import replication_pb2
from cbr_common.db import utcnow
from cbr_common.errors import ConflictError
from cbr_common.regions import RegionDirectory
from cbr_replication.adapters.backups import BackupPort
from cbr_replication.adapters.destinations import DestinationPort
from cbr_replication.adapters.repository import CheckpointRequest
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.domain import errors, rules
from cbr_replication.domain.model import Destination, ReplicationRecord, SourceBackup


@dataclass(frozen=True)
class Peers:
    """What the use cases ask outside this service: the region directory, the backup service, peer regions."""
    regions: RegionDirectory
    backups: BackupPort
    destinations: DestinationPort


@dataclass(frozen=True)
class ReplicateBackup:
    project_id: str
    backup_id: str
    destination: Destination
    name: str = ""
    description: str = ""
    request_id: str = ""
    rate_limit_mbps: float = 0.0


@dataclass(frozen=True)
class ReplicateCheckpoint:
    project_id: str
    vault_id: str
    destination: Destination
    auto_trigger: bool = False
    request_id: str = ""
    policy_id: str = ""
    retention: bytes = b""  # auto replicas: the policy's rule, a serialized ReplicaRetention
    rate_limit_mbps: float = 0.0


MakeUow = Callable[[], ReplicationUnitOfWork]


async def replicate_backup(cmd: ReplicateBackup, make_uow: MakeUow, peers: Peers) -> ReplicationRecord:
    """The new record, or the one standing for this request: the same request_id's, or the backup's replica
    (or replication under way) in that vault."""
    rules.check_id(cmd.backup_id, "backup_id")
    rules.check_name(cmd.name)
    rules.check_description(cmd.description)
    rules.check_request_id(cmd.request_id)
    rules.check_rate_limit(cmd.rate_limit_mbps)
    rules.check_destination(cmd.destination, peers.regions.local, peers.regions.destinations)
    if cmd.request_id:
        async with make_uow() as uow:
            earlier = await _earlier_backup_request(uow, cmd)
        if earlier is not None:
            return earlier
    backup = await peers.backups.get_backup(cmd.project_id, cmd.backup_id)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {cmd.backup_id} not found")
    rules.check_source(backup)
    async with make_uow() as uow:
        standing = rules.standing_record(await uow.records.for_backup(cmd.project_id, backup.backup_id,
                                                                      cmd.destination))
    if standing is not None:
        return standing
    await peers.destinations.check(cmd.destination, backup.resource_type, backup.resource_size_bytes)
    record = _new_record(cmd.project_id, peers.regions.local, backup, cmd.destination, name=cmd.name,
                         description=cmd.description, request_id=cmd.request_id,
                         rate_limit_mbps=cmd.rate_limit_mbps)
    try:
        async with make_uow() as uow:
            await uow.records.add(record)
            await uow.publish(requested_event(record))
            await uow.commit()
        return record
    except IntegrityError:
        pass
    # A concurrent call won one of the unique indexes (its request_id, or the backup's open record there).
    async with make_uow() as uow:
        earlier = await _earlier_backup_request(uow, cmd) if cmd.request_id else None
        standing = earlier or rules.standing_record(
            await uow.records.for_backup(cmd.project_id, backup.backup_id, cmd.destination))
    if standing is None:
        raise ConflictError("a concurrent change won, try again")
    return standing


async def replicate_checkpoint(cmd: ReplicateCheckpoint, make_uow: MakeUow,
                               peers: Peers) -> list[ReplicationRecord]:
    """A record for every available backup of the vault taken here without a replica in the destination vault
    (none yet, or the last one failed or was cancelled); the records it made, oldest backup first."""
    rules.check_id(cmd.vault_id, "vault_id")
    rules.check_request_id(cmd.request_id)
    rules.check_rate_limit(cmd.rate_limit_mbps)
    rules.check_destination(cmd.destination, peers.regions.local, peers.regions.destinations)
    request = CheckpointRequest(cmd.project_id, cmd.request_id, cmd.vault_id, cmd.destination, cmd.auto_trigger,
                                cmd.policy_id)
    if cmd.request_id:
        async with make_uow() as uow:
            earlier = await _earlier_checkpoint_request(uow, request)
        if earlier is not None:
            return earlier
    candidates = [b for b in await peers.backups.replicable_backups(cmd.project_id, cmd.vault_id)
                  if not b.corrupt and not b.parent_id]
    async with make_uow() as uow:
        existing = await uow.records.for_vault(cmd.project_id, cmd.vault_id, cmd.destination)
    due = [b for b in candidates
           if rules.standing_record(r for r in existing if r.source_backup_id == b.backup_id) is None]
    if due:
        await peers.destinations.check(cmd.destination, due[0].resource_type,
                                       max(b.resource_size_bytes for b in due))
    made: list[ReplicationRecord] = []
    try:
        async with make_uow() as uow:
            if cmd.request_id:
                await uow.records.add_checkpoint_request(request, utcnow())
            for backup in due:
                record = _new_record(cmd.project_id, peers.regions.local, backup, cmd.destination,
                                     auto_trigger=cmd.auto_trigger, policy_id=cmd.policy_id,
                                     retention=cmd.retention, checkpoint_request_id=cmd.request_id,
                                     rate_limit_mbps=cmd.rate_limit_mbps)
                try:
                    async with uow.session.begin_nested():
                        await uow.records.add(record)
                except IntegrityError:
                    continue  # a concurrent request made this backup's record meanwhile
                await uow.publish(requested_event(record))
                made.append(record)
            await uow.commit()
        return made
    except IntegrityError:
        pass
    async with make_uow() as uow:  # the same request_id raced in
        earlier = await _earlier_checkpoint_request(uow, request)
    if earlier is None:
        raise ConflictError("a concurrent change won, try again")
    return earlier


async def _earlier_backup_request(uow: ReplicationUnitOfWork, cmd: ReplicateBackup) -> ReplicationRecord | None:
    """The record this request_id made, if it made one with the same arguments; 6912 if with others."""
    record = await uow.records.by_request(cmd.project_id, cmd.request_id)
    if record is not None:
        if rules.same_request(record, cmd.backup_id, cmd.destination, cmd.name, cmd.description):
            return record
        raise errors.RequestIdReusedError(f"request_id {cmd.request_id} made record "
                                          f"{record.replication_record_id} with other arguments")
    if await uow.records.checkpoint_request(cmd.project_id, cmd.request_id) is not None:
        raise errors.RequestIdReusedError(f"request_id {cmd.request_id} was used by ReplicateCheckpoint")
    return None


async def _earlier_checkpoint_request(uow: ReplicationUnitOfWork,
                                      request: CheckpointRequest) -> list[ReplicationRecord] | None:
    earlier = await uow.records.checkpoint_request(request.project_id, request.request_id)
    if earlier is None:
        if await uow.records.by_request(request.project_id, request.request_id) is not None:
            raise errors.RequestIdReusedError(f"request_id {request.request_id} was used by ReplicateBackup")
        return None
    if earlier != request:
        raise errors.RequestIdReusedError(f"request_id {request.request_id} was used with other arguments")
    return await uow.records.by_checkpoint_request(request.project_id, request.request_id)


def _new_record(project_id: str, local_region: str, backup: SourceBackup, destination: Destination,
                **fields) -> ReplicationRecord:
    now = utcnow()
    fields["name"] = fields.get("name") or backup.name
    fields["description"] = fields.get("description") or backup.description
    return ReplicationRecord(
        replication_record_id=str(uuid.uuid4()), project_id=project_id, source_region=local_region,
        source_vault_id=backup.vault_id, source_backup_id=backup.backup_id, destination=destination,
        status="waiting", created_time=now, updated_time=now, resource_type=backup.resource_type,
        resource_id=backup.resource_id, **fields)


def requested_event(record: ReplicationRecord) -> ev.ReplicationRequested:
    """cbr.replication.requested: the backup service creates the record's task from it, once (inbox)."""
    event = ev.ReplicationRequested(
        project_id=record.project_id, replication_record_id=record.replication_record_id,
        source_vault_id=record.source_vault_id, source_backup_id=record.source_backup_id,
        destination_region=record.destination.region, destination_project_id=record.destination.project_id,
        destination_vault_id=record.destination.vault_id, name=record.name, description=record.description,
        auto_trigger=record.auto_trigger, policy_id=record.policy_id, rate_limit_mbps=record.rate_limit_mbps)
    if record.auto_trigger and record.retention:
        event.retention.CopyFrom(replication_pb2.ReplicaRetention.FromString(record.retention))
    return event

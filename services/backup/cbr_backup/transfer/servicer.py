"""RegionTransferService over gRPC (DESIGN.md 17.5): who may call (a region_peer of a region this region's directory
names), then convert, call the receiver, convert back. Errors leave through cbr_common's table."""
from __future__ import annotations

import datetime as dt

from google.protobuf import json_format

from cbr.common.v1 import common_pb2
from cbr.replication.v1 import replication_pb2 as pb
from cbr.replication.v1 import replication_pb2_grpc
from cbr_backup.domain import errors
from cbr_backup.domain.replicas import SourceBackup
from cbr_backup.transfer.chunks import WireChunk
from cbr_backup.transfer.receiver import BeginTransfer, ChunkMessage, ManifestPart, TransferReceiver
from cbr_common.auth import ROLE_REGION_PEER, current_principal
from cbr_common.proto_enums import enum_name
from cbr_common.regions import RegionDirectory, peer_region

SERVICE = "cbr.replication.v1.RegionTransferService"
KINDS = {pb.MANIFEST_KIND_DISK_DELTA: "disk", pb.MANIFEST_KIND_TREE_ZSTD: "tree", pb.MANIFEST_KIND_SERVER: "server"}


class RegionTransferServicer(replication_pb2_grpc.RegionTransferServiceServicer):
    def __init__(self, receiver: TransferReceiver, directory: RegionDirectory):
        self._receiver = receiver
        self._directory = directory

    def _peer(self) -> str:
        """The calling region: a region_peer token whose subject names a peer of this region's directory."""
        principal = current_principal()
        region = peer_region(principal.subject)
        if ROLE_REGION_PEER not in principal.roles or region is None or self._directory.peer(region) is None:
            raise errors.NotAPeerError("only a peer region this region's directory names may transfer replicas")
        return region

    async def CheckDestination(self, request, context):
        name = await self._receiver.check_destination(
            self._peer(), request.source_region, request.destination_project_id, request.destination_vault_id,
            enum_name(common_pb2.ObjectType, request.resource_type), request.resource_size_bytes)
        return pb.CheckDestinationResponse(vault_name=name)

    async def BeginTransfer(self, request, context):
        peer = self._peer()
        retention = json_format.MessageToDict(request.retention, preserving_proto_field_name=True) \
            if request.HasField("retention") else None
        result = await self._receiver.begin(peer, BeginTransfer(
            record_id=request.replication_record_id, source_region=request.source_region,
            source=source_backup_in(request.source_backup), project_id=request.destination_project_id,
            vault_id=request.destination_vault_id, name=request.name, description=request.description,
            source_vault_id=request.source_vault_id, key_check=request.namespace_key_check, retention=retention))
        return pb.BeginTransferResponse(
            transfer_id=result.transfer_id, resumable=result.resumable,
            committed_backup_id=result.committed_backup_id, namespace_known=result.namespace_known,
            parents=[pb.ParentReplica(resource_id=p.resource_id, replica_backup_id=p.replica_backup_id,
                                      source_backup_id=p.source_backup_id, manifest_digest=p.digest)
                     for p in result.parents],
            staged=[_staged_out(s) for s in result.staged])

    async def PutNamespaceKey(self, request, context):
        await self._receiver.put_namespace_key(self._peer(), request.transfer_id, request.id_key)
        return pb.PutNamespaceKeyResponse()

    async def PutManifests(self, request_iterator, context):
        async def parts():
            async for r in request_iterator:
                yield ManifestPart(r.transfer_id, r.source_backup_id, KINDS.get(r.kind, ""),
                                   r.parent_replica_backup_id, r.offset, r.data, r.last)
        staged = await self._receiver.put_manifests(self._peer(), parts())
        return pb.PutManifestsResponse(staged=[_staged_out(s) for s in staged])

    async def ListWantedChunks(self, request, context):
        page = await self._receiver.list_wanted(self._peer(), request.transfer_id, request.after_id, request.limit)
        return pb.ListWantedChunksResponse(chunk_ids=page.chunk_ids, dictionary_ids=page.dictionary_ids,
                                           done=page.done, present_bytes=page.present_bytes,
                                           present_chunks=page.present_chunks)

    async def PutDictionary(self, request, context):
        await self._receiver.put_dictionary(self._peer(), request.transfer_id, request.dictionary_id, request.content)
        return pb.PutDictionaryResponse()

    async def PutChunks(self, request_iterator, context):
        peer = self._peer()

        async def messages():
            async for r in request_iterator:
                yield ChunkMessage(r.transfer_id, r.seq, [WireChunk(c.chunk_id, c.raw_size, c.flags, c.dictionary_tag,
                                                                    c.payload) for c in r.chunks], r.flush)
        async for ack in self._receiver.put_chunks(peer, messages()):
            yield pb.PutChunksAck(durable_through_seq=ack.durable_through_seq, stored_bytes=ack.stored_bytes,
                                  rejected=[pb.RejectedChunk(chunk_id=r.chunk_id, code=r.code, message=r.message)
                                            for r in ack.rejected])

    async def CommitTransfer(self, request, context):
        committed = await self._receiver.commit(self._peer(), request.transfer_id,
                                                {d.source_backup_id: d.digest for d in request.expected})
        return pb.CommitTransferResponse(backup_id=committed.backup_id, replica=[
            pb.ManifestDigest(source_backup_id=b, digest=d) for b, d in sorted(committed.replica.items())])

    async def AbortTransfer(self, request, context):
        await self._receiver.abort(self._peer(), request.transfer_id)
        return pb.AbortTransferResponse()


def source_backup_in(msg: pb.SourceBackup) -> SourceBackup:
    def time(field: str) -> dt.datetime | None:
        return getattr(msg, field).ToDatetime(dt.timezone.utc) if msg.HasField(field) else None

    return SourceBackup(
        backup_id=msg.backup_id, project_id=msg.project_id, vault_id=msg.vault_id, resource_id=msg.resource_id,
        resource_type=enum_name(common_pb2.ObjectType, msg.resource_type), checkpoint_id=msg.checkpoint_id,
        name=msg.name, description=msg.description, resource_name=msg.resource_name,
        resource_size_bytes=msg.resource_size_bytes, incremental=msg.incremental, auto_trigger=msg.auto_trigger,
        logical_bytes=msg.logical_bytes, stored_bytes=msg.stored_bytes, device=msg.device,
        created_time=time("created_time"), protected_time=time("protected_time"),
        children=tuple(source_backup_in(c) for c in msg.children))


def _staged_out(staged) -> pb.StagedManifest:
    return pb.StagedManifest(source_backup_id=staged.source_backup_id, manifest_digest=staged.digest,
                             size_bytes=staged.size_bytes)

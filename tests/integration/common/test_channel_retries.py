"""cbr_common.channels over real sockets: calls spread over the replicas an address lists; on UNAVAILABLE a read is
tried again (gRPC's retry policy) and so is a write that carries a request_id (KeyedRetry), any other write never."""
from __future__ import annotations

import collections

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import backup_pb2_grpc
from cbr_common import channels


class FlakyBackups(backup_pb2_grpc.BackupServiceServicer):
    """Answers UNAVAILABLE to the first attempt of each distinct request, as a replica dying under it would."""

    def __init__(self, name: str, attempts: collections.Counter, served: collections.Counter):
        self.name, self.attempts, self.served = name, attempts, served

    async def _first_fails(self, key: str, context) -> None:
        self.attempts[key] += 1
        self.served[self.name] += 1
        if self.attempts[key] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    async def GetBackup(self, request, context):
        await self._first_fails(f"get {request.backup_id}", context)
        return bp.GetBackupResponse(backup=bp.Backup(backup_id=request.backup_id))

    async def CreateCheckpoint(self, request, context):
        await self._first_fails(f"create {request.vault_id} {request.request_id}", context)
        return bp.CreateCheckpointResponse(checkpoint=bp.Checkpoint(checkpoint_id=f"cp-{request.request_id}"))

    async def DeleteBackup(self, request, context):
        await self._first_fails(f"delete {request.backup_id}", context)
        return bp.DeleteBackupResponse()


@pytest.fixture
async def replicas():
    attempts, served = collections.Counter(), collections.Counter()
    servers, ports = [], []
    for name in ("a", "b"):
        server = grpc.aio.server()
        backup_pb2_grpc.add_BackupServiceServicer_to_server(FlakyBackups(name, attempts, served), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    channel = channels.open_channel(",".join(f"127.0.0.1:{port}" for port in ports))
    yield backup_pb2_grpc.BackupServiceStub(channel), attempts, served
    await channel.close()
    for server in servers:
        await server.stop(0)


async def test_reads_and_request_id_writes_are_tried_again_and_other_writes_are_not(replicas):
    stub, attempts, served = replicas
    for i in range(10):
        got = await stub.GetBackup(bp.GetBackupRequest(backup_id=f"b{i}"), timeout=10)
        assert got.backup.backup_id == f"b{i}"
        made = await stub.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id="v", request_id=f"r{i}"), timeout=10)
        assert made.checkpoint.checkpoint_id == f"cp-r{i}"
    assert all(attempts[f"get b{i}"] == 2 and attempts[f"create v r{i}"] == 2 for i in range(10))
    assert served["a"] > 0 and served["b"] > 0  # balanced over both replicas

    with pytest.raises(grpc.aio.AioRpcError) as unkeyed:
        await stub.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id="w"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as delete:
        await stub.DeleteBackup(bp.DeleteBackupRequest(backup_id="b0"), timeout=10)
    assert unkeyed.value.code() == delete.value.code() == grpc.StatusCode.UNAVAILABLE
    assert attempts["create w "] == 1 and attempts["delete b0"] == 1  # no request_id: never sent twice

"""A unit-level stand-in for a peer region's RegionTransferService that answers CheckDestination only (the real
one is the destination's backup service, DESIGN 17.2): it checks the bearer token and refuses the vaults a test
names with the status the test gives, so the source's validation can be tested without a second region."""
from __future__ import annotations

import grpc

from cbr.replication.v1 import replication_pb2, replication_pb2_grpc


class FakeDestination(replication_pb2_grpc.RegionTransferServiceServicer):
    def __init__(self, token: str):
        self.token = token
        self.refusals: dict[str, tuple[grpc.StatusCode, str]] = {}  # destination vault id -> the answer
        self.calls: list[replication_pb2.CheckDestinationRequest] = []
        self._server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> "FakeDestination":
        self._server = grpc.aio.server()
        replication_pb2_grpc.add_RegionTransferServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self._server.stop(grace=0.5)

    async def CheckDestination(self, request, context):
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "unknown credential")
        self.calls.append(request)
        refusal = self.refusals.get(request.destination_vault_id)
        if refusal is not None:
            await context.abort(*refusal)
        return replication_pb2.CheckDestinationResponse(vault_name="replicas")

"""Asks a peer region whether a replica could go into one of its vaults (RegionTransferService.CheckDestination,
served by the peer's backup service), and turns its answer into this service's codes (DESIGN 17.10)."""
from __future__ import annotations

from typing import Protocol

import grpc

from cbr.common.v1 import common_pb2
from cbr.replication.v1 import replication_pb2, replication_pb2_grpc
from cbr_common.echo import capped
from cbr_common.proto_enums import enum_value
from cbr_common.regions import RegionDirectory, open_peer_channel, peer_metadata
from cbr_replication.domain import errors
from cbr_replication.domain.model import Destination

# The peer's refusal, by status, as the error this region answers with; the peer's message is kept.
REFUSALS = {
    grpc.StatusCode.NOT_FOUND: errors.DestinationVaultNotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.DestinationVaultUnfitError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.DestinationVaultFullError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.MalformedRequestError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PeerRefusedError,
    grpc.StatusCode.UNAUTHENTICATED: errors.PeerRefusedError,
}


class DestinationPort(Protocol):
    async def check(self, destination: Destination, resource_type: str, resource_size_bytes: int) -> str: ...


class PeerDestinations:
    """One channel per peer region, opened when first needed."""

    def __init__(self, regions: RegionDirectory, timeout: float):
        self._regions = regions
        self._timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def check(self, destination: Destination, resource_type: str, resource_size_bytes: int) -> str:
        """The destination vault's name, or the refusal (6907, 6908, 6909, 6920, 6921)."""
        peer = self._regions.peer(destination.region)
        if peer is None:  # checked before; the directory does not change while running
            raise errors.UnknownRegionError(f"destination_region {destination.region} is not in the directory")
        try:
            metadata = peer_metadata(peer)
        except OSError as exc:
            raise errors.PeerRefusedError(f"this region's credential for {peer.name} cannot be read "
                                          f"({exc.strerror})") from None
        if peer.name not in self._channels:
            self._channels[peer.name] = open_peer_channel(peer)
        stub = replication_pb2_grpc.RegionTransferServiceStub(self._channels[peer.name])
        try:
            reply = await stub.CheckDestination(replication_pb2.CheckDestinationRequest(
                source_region=self._regions.local, destination_project_id=destination.project_id,
                destination_vault_id=destination.vault_id,
                resource_type=enum_value(common_pb2.ObjectType, resource_type),
                resource_size_bytes=resource_size_bytes), metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            refusal = REFUSALS.get(error.code())
            said = capped(error.details() or error.code().name)
            if refusal is errors.PeerRefusedError:
                raise refusal(f"region {peer.name} refused this region: {said}") from None
            if refusal is not None:
                raise refusal(f"region {peer.name}: {said}") from None
            # Down, too slow, not serving the transfer API (yet), or failing: try again later.
            raise errors.PeerUnavailableError(f"region {peer.name} is unreachable ({error.code().name}: {said}); "
                                              f"try again later") from None
        return reply.vault_name

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

"""The client of a peer region's RegionTransferService (DESIGN.md 17.5): calls with this region's credential, the
serialized size of every message counted (17.9's metadata bytes), and the peer's answers mapped to the source's
errors: unreachable (try again), credential refused (6921), or refused with the peer's own code.

PutChunks messages go serialized by `encode_put_chunks`: each payload is copied once, into the message's bytes.
Built as a PutChunksRequest it was copied into the message and again when gRPC serialized it (CPU on the
sending path, and two live copies of every 4 MiB message in the worker)."""
from __future__ import annotations

from typing import AsyncIterator, Callable

import grpc

from cbr.replication.v1 import replication_pb2 as rpb
from cbr.replication.v1 import replication_pb2_grpc
from cbr_backup.domain.replication_source import PeerRefusedCredentialError, PeerRefusedError
from cbr_common.grpc_errors import cbr_code_of
from cbr_common.regions import Peer, open_peer_channel, peer_metadata

CALL_SECONDS = 60.0
LONG_CALL_SECONDS = 600.0  # the want-list and the commit touch every named chunk at the destination
MESSAGE_BYTES = 64 << 20   # a tree chunk of 4 MiB plus its fields goes in one message
_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
         grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED)
_DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class PeerDownError(Exception):
    """The peer did not answer, or broke off: the transfer goes on where it was once it answers again."""


def peer_error(exc: grpc.aio.AioRpcError, peer: str) -> Exception:
    code, details = exc.code(), exc.details() or ""
    if code in _DOWN:
        return PeerDownError(f"region {peer}: {code.name} {details}".strip())
    if code in _DENIED:
        return PeerRefusedCredentialError(f"region {peer} refused this region's credential: {code.name} {details}")
    return PeerRefusedError(f"region {peer} refused the transfer: {code.name} {details}",
                            cbr_code_of(exc) or "ReplicationService.6920")


class TransferClient:
    """One peer's RegionTransferService; `count(nbytes, answer)` hears the size of every message either way
    (answer: it came from the peer)."""

    def __init__(self, peer: Peer, count: Callable[..., None]):
        self.peer = peer
        self._count = count
        self._channel = open_peer_channel(peer, MESSAGE_BYTES)
        self._stub = replication_pb2_grpc.RegionTransferServiceStub(self._channel)
        self._put_chunks = self._channel.stream_stream(  # no request serializer: the messages are bytes already
            "/cbr.replication.v1.RegionTransferService/PutChunks",
            response_deserializer=rpb.PutChunksAck.FromString)

    async def close(self) -> None:
        await self._channel.close()

    def metadata(self):
        return peer_metadata(self.peer)  # read per call: an operator may rotate the token

    async def _unary(self, method: str, request, timeout: float = CALL_SECONDS):
        self._count(request.ByteSize())
        try:
            response = await getattr(self._stub, method)(request, metadata=self.metadata(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, self.peer.name) from None
        self._count(response.ByteSize(), answer=True)
        return response

    async def begin(self, request: rpb.BeginTransferRequest) -> rpb.BeginTransferResponse:
        return await self._unary("BeginTransfer", request)

    async def put_namespace_key(self, transfer_id: str, id_key: bytes) -> None:
        await self._unary("PutNamespaceKey", rpb.PutNamespaceKeyRequest(transfer_id=transfer_id, id_key=id_key))

    async def put_manifests(self, requests: list[rpb.PutManifestsRequest]) -> rpb.PutManifestsResponse:
        async def stream() -> AsyncIterator[rpb.PutManifestsRequest]:
            for request in requests:
                self._count(request.ByteSize())
                yield request
        try:
            response = await self._stub.PutManifests(stream(), metadata=self.metadata(), timeout=LONG_CALL_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, self.peer.name) from None
        self._count(response.ByteSize(), answer=True)
        return response

    async def wanted(self, transfer_id: str, after_id: bytes, limit: int) -> rpb.ListWantedChunksResponse:
        return await self._unary("ListWantedChunks", rpb.ListWantedChunksRequest(
            transfer_id=transfer_id, after_id=after_id, limit=limit), LONG_CALL_SECONDS)

    async def put_dictionary(self, transfer_id: str, dictionary_id: bytes, content: bytes) -> None:
        await self._unary("PutDictionary", rpb.PutDictionaryRequest(transfer_id=transfer_id,
                                                                   dictionary_id=dictionary_id, content=content))

    def put_chunks(self):
        """The bidi stream; it takes messages as encode_put_chunks makes them, counted by the caller (payload and
        the rest apart)."""
        return self._put_chunks(metadata=self.metadata())

    async def commit(self, transfer_id: str, expected: list[rpb.ManifestDigest]) -> rpb.CommitTransferResponse:
        return await self._unary("CommitTransfer", rpb.CommitTransferRequest(transfer_id=transfer_id,
                                                                            expected=expected), LONG_CALL_SECONDS)

    async def abort(self, transfer_id: str, reason: str) -> None:
        await self._unary("AbortTransfer", rpb.AbortTransferRequest(transfer_id=transfer_id, reason=reason), 10.0)


def encode_put_chunks(seq: int, chunks: list[tuple[bytes, int, int, int, bytes]] = (), transfer_id: str = "",
                      flush: bool = False) -> bytes:
    """A PutChunksRequest serialized, byte for byte what the generated class makes (a unit test holds them
    equal): chunks are (chunk_id, raw_size, flags, dictionary_tag, payload), in order. Proto3 encoding: fields
    in number order, defaults left out."""
    parts = []
    if transfer_id:
        parts.append(_length_delimited(1, transfer_id.encode()))
    if seq:
        parts.append(_varint_field(2, seq))
    for chunk_id, raw_size, flags, tag, payload in chunks:
        head = bytearray(_length_delimited(1, chunk_id))
        if raw_size:
            head += _varint_field(2, raw_size)
        if flags:
            head += _varint_field(3, flags)
        if tag:
            head += _FIXED32_TAG4 + tag.to_bytes(4, "little")
        if payload:
            head += _varint(5 << 3 | 2) + _varint(len(payload))
        parts += [_varint(3 << 3 | 2) + _varint(len(head) + len(payload)), head, payload]
    if flush:
        parts.append(_varint_field(4, 1))
    return b"".join(parts)


_FIXED32_TAG4 = bytes((4 << 3 | 5,))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _length_delimited(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data

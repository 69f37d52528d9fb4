"""A peer region's answers, as the source's replication job sees them: down (the transfer waits and resumes),
credential refused (6921), or refused with the peer's own code."""
import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from cbr_backup.adapters.transfer_client import PeerDownError, peer_error
from cbr_backup.domain.replication_source import PeerRefusedCredentialError, PeerRefusedError
from cbr_common.grpc_errors import status_for
from cbr_common import errors


def rpc_error(code: grpc.StatusCode, details: str = "", cbr_code: str | None = None) -> AioRpcError:
    trailing = Metadata()
    if cbr_code:
        status = status_for(errors.FailedPreconditionError(details, cbr_code))
        trailing = Metadata(*status.trailing_metadata)
    return AioRpcError(code, Metadata(), trailing, details)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.INTERNAL])
def test_a_peer_that_does_not_answer_is_down(code):
    assert isinstance(peer_error(rpc_error(code, "gone"), "region-b"), PeerDownError)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_a_refused_credential_is_6921(code):
    error = peer_error(rpc_error(code, "no"), "region-b")
    assert isinstance(error, PeerRefusedCredentialError) and error.cbr_code == "ReplicationService.6921"


def test_a_refusal_keeps_the_peers_code():
    error = peer_error(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "missing",
                                 "RegionTransferService.6955"), "region-b")
    assert isinstance(error, PeerRefusedError) and error.cbr_code == "RegionTransferService.6955"
    assert "missing" in error.message


def test_put_chunks_messages_are_encoded_as_the_generated_class_serializes_them():
    from cbr.replication.v1 import replication_pb2 as rpb
    from cbr_backup.adapters.transfer_client import encode_put_chunks
    chunks = [(bytes(range(32)), 131072, 5, 0xDEADBEEF, b"\x28\xb5\x2f\xfd" + bytes(300)),
              (b"\xff" * 32, 1, 0, 0, b"x"), (b"\x01" * 32, 0, 1, 7, b"")]
    for seq, transfer_id, flush, some in ((1, "8c1d6c1e-55b4-4e0e-9a53-0d2f1f9b4a10", False, chunks),
                                          (300, "", False, chunks[:1]), (2 ** 40, "", True, [])):
        expected = rpb.PutChunksRequest(seq=seq, transfer_id=transfer_id, flush=flush, chunks=[
            rpb.WireChunk(chunk_id=c, raw_size=r, flags=f, dictionary_tag=t, payload=p) for c, r, f, t, p in some])
        encoded = encode_put_chunks(seq, some, transfer_id=transfer_id, flush=flush)
        assert encoded == expected.SerializeToString()
        assert rpb.PutChunksRequest.FromString(encoded) == expected

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

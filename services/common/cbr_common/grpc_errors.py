"""The one table from domain errors to gRPC status codes, and the status (with CBR code) sent to callers."""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cbr_common import errors
from cbr_common.echo import capped

# Walked along each exception's MRO, so a service's own subclasses map without entries here.
STATUS_BY_ERROR: dict[type[BaseException], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ConflictError: grpc.StatusCode.ABORTED,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DataLossError: grpc.StatusCode.DATA_LOSS,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    NotImplementedError: grpc.StatusCode.UNIMPLEMENTED,  # what generated base servicers raise
}

ERROR_DOMAIN = "cbr"
INTERNAL_MESSAGE = "internal error"


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def status_for(exc: BaseException) -> grpc.Status:
    """A rich status: code, message, and an ErrorInfo detail whose `reason` is the CBR code.

    The message is capped (cbr_common.echo): one that quoted a long input would otherwise grow the status past
    what clients accept in metadata (16 KiB by default), and the caller would get RESOURCE_EXHAUSTED instead."""
    code = status_code_for(exc)
    if isinstance(exc, errors.CbrError):
        message = exc.message
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = "method not implemented yet"
    else:
        message = INTERNAL_MESSAGE
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=capped(message))
    cbr_code = getattr(exc, "cbr_code", None)
    if cbr_code:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=cbr_code, domain=ERROR_DOMAIN))
        status.details.append(detail)
    return rpc_status.to_status(status)


def cbr_code_of(call_error: grpc.RpcError) -> str | None:
    """The CBR code a failed call carried, for clients and tests."""
    status = rpc_status.from_call(call_error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info.reason
    return None

"""Domain error classes. They carry a message and, where one fits, a CBR-style code; they never import grpc."""
from __future__ import annotations


class CbrError(Exception):
    """Base of every error a caller may see. `cbr_code` is e.g. 'BackupService.6102'."""

    cbr_code: str | None = None

    def __init__(self, message: str, cbr_code: str | None = None):
        super().__init__(message)
        self.message = message
        if cbr_code is not None:
            self.cbr_code = cbr_code


class InvalidArgumentError(CbrError):
    """The request itself is wrong; nothing was written."""


class NotFoundError(CbrError):
    """The object does not exist in the caller's project."""


class AlreadyExistsError(CbrError):
    """An object with that identity exists already."""


class FailedPreconditionError(CbrError):
    """The object is not in a state that allows the operation."""


class ConflictError(CbrError):
    """A concurrent change won; retry the operation."""


class ResourceExhaustedError(CbrError):
    """A capacity or quota limit is reached."""


class DataLossError(CbrError):
    """Stored data is corrupt or missing."""


class UnavailableError(CbrError):
    """A dependency (database, message bus, peer service) is down."""


class UnauthenticatedError(CbrError):
    """No valid credentials."""


class PermissionDeniedError(CbrError):
    """Valid credentials, but the caller's role does not allow the operation."""

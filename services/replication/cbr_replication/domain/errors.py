"""The replication service's errors, each with its code of the 6900-6999 range (services/backup/DESIGN.md 17.10).

  6901 destination region not in this region's directory   6902 destination region is this region
  6903 source backup not found        6904 source backup not available   6905 source backup is a replica
  6906 source backup corrupt          6907 destination vault not found   6908 destination vault unfit
  6909 destination vault has no room  6910 record not found              6911 malformed input
  6912 request_id reused with other arguments
  6920 peer region unreachable        6921 peer refused this region's credential
  6956 (on a record) source and replica manifest digests differ
"""
from __future__ import annotations

from cbr_common import errors

PREFIX = "ReplicationService."


class UnknownRegionError(errors.InvalidArgumentError):
    cbr_code = PREFIX + "6901"


class SameRegionError(errors.InvalidArgumentError):
    cbr_code = PREFIX + "6902"


class BackupNotFoundError(errors.NotFoundError):
    cbr_code = PREFIX + "6903"


class BackupNotAvailableError(errors.FailedPreconditionError):
    cbr_code = PREFIX + "6904"


class BackupIsReplicaError(errors.FailedPreconditionError):
    cbr_code = PREFIX + "6905"


class BackupCorruptError(errors.FailedPreconditionError):
    cbr_code = PREFIX + "6906"


class DestinationVaultNotFoundError(errors.NotFoundError):
    cbr_code = PREFIX + "6907"


class DestinationVaultUnfitError(errors.FailedPreconditionError):
    cbr_code = PREFIX + "6908"


class DestinationVaultFullError(errors.ResourceExhaustedError):
    cbr_code = PREFIX + "6909"


class RecordNotFoundError(errors.NotFoundError):
    cbr_code = PREFIX + "6910"


class MalformedRequestError(errors.InvalidArgumentError):
    """A malformed id, name, description, request_id, status filter or paging."""
    cbr_code = PREFIX + "6911"


class RequestIdReusedError(errors.AlreadyExistsError):
    cbr_code = PREFIX + "6912"


class PeerUnavailableError(errors.UnavailableError):
    cbr_code = PREFIX + "6920"


class PeerRefusedError(errors.PermissionDeniedError):
    cbr_code = PREFIX + "6921"


DIGESTS_DIFFER = PREFIX + "6956"

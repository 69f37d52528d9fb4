"""The vault service's errors, each with its CBR code. Codes from the CBR v3 API where one exists
(BackupService.61xx / 66xx); the 64xx codes are ours, for rules CBR checks without publishing a code."""
from __future__ import annotations

from cbr_common import errors


class InvalidVaultNameError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6401"


class InvalidDescriptionError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6402"


class InvalidObjectTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6403"


class InvalidProtectTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6404"


class InvalidCapacityError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6101"


class InvalidTagError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6406"


class TooManyTagsError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6600"


class InvalidThresholdError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6407"


class InvalidIdError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6408"


class InvalidPagingError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6409"


class InvalidConsistencyError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6410"


class ResourceTypeMismatchError(errors.InvalidArgumentError):
    """The vault does not hold resources of that type."""
    cbr_code = "BackupService.6102"


class DuplicateResourceError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6104"


class InvalidExcludeVolumesError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6411"


class EmptyResourceListError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6412"


class InvalidMigrationError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6413"


class VaultNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6130"


class ResourceNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6136"


class PolicyNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6131"


class ResourceInVaultError(errors.AlreadyExistsError):
    cbr_code = "BackupService.6103"


class TooManyResourcesError(errors.ResourceExhaustedError):
    cbr_code = "BackupService.6100"


class ResourceNotInVaultError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6135"


class VaultStatusError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6112"


class VaultLockedError(errors.FailedPreconditionError):
    """Backup locking cannot be undone, and a locked vault keeps its resources."""
    cbr_code = "BackupService.6414"


class PolicyNotApplicableError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6127"


class PolicySlotTakenError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6126"


class PolicyNotAssociatedError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6128"


class CapacityBelowUsageError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6114"


class InvalidAuditFilterError(errors.InvalidArgumentError):
    """A ListAuditEvents filter that cannot match as given (unknown outcome, malformed method, time range)."""
    cbr_code = "BackupService.6415"


class AuditScopeError(errors.PermissionDeniedError):
    """A project's user asked for another project's audit trail."""
    cbr_code = "BackupService.6416"

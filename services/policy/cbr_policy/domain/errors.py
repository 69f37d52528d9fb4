"""The policy service's errors, each with its CBR code.

CBR's own codes where the reference publishes one (6001 too many policies of a type, 6117 unknown operation
type); the 68xx codes are ours:

  6801 invalid name                 6802 invalid trigger pattern        6803 fire times too close or too many
  6804 invalid time zone            6805 invalid retention              6806 retention rules that cannot combine
  6807 GFS counts without a time zone  6808 invalid replication destination  6809 operation type is immutable
  6810 malformed id                 6811 invalid paging                 6812 invalid time range
  6813 invalid full_backup_interval
  6820 policy not found             6821 vault not found
"""
from __future__ import annotations

from cbr_common import errors


class InvalidNameError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6801"


class InvalidPatternError(errors.InvalidArgumentError):
    """A trigger pattern outside CBR's RRULE subset (FREQ DAILY|WEEKLY, BYDAY, BYHOUR, BYMINUTE, INTERVAL)."""
    cbr_code = "BackupService.6802"


class ScheduleTooDenseError(errors.InvalidArgumentError):
    """Fire times less than an hour apart, more than 24 a day, or more than 24 patterns."""
    cbr_code = "BackupService.6803"


class InvalidTimezoneError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6804"


class InvalidRetentionError(errors.InvalidArgumentError):
    """A count out of range: max_backups and retention_duration_days -1 or 1..99999, GFS counts 0..100."""
    cbr_code = "BackupService.6805"


class RetentionConflictError(errors.InvalidArgumentError):
    """retention_duration_days together with max_backups or a GFS count."""
    cbr_code = "BackupService.6806"


class GfsWithoutTimezoneError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6807"


class InvalidDestinationError(errors.InvalidArgumentError):
    """Replication destination missing, too long, the current region, or set on a backup policy."""
    cbr_code = "BackupService.6808"


class ImmutableOperationTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6809"


class InvalidIdError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6810"


class InvalidPagingError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6811"


class InvalidTimeRangeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6812"


class InvalidFullBackupIntervalError(errors.InvalidArgumentError):
    """full_backup_interval not -1 or 1..100, or set on a replication policy."""
    cbr_code = "BackupService.6813"


class UnknownOperationTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6117"


class TooManyPoliciesError(errors.ResourceExhaustedError):
    """At most 32 policies of each operation type per project."""
    cbr_code = "BackupService.6001"


class PolicyNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6820"


class VaultNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6821"

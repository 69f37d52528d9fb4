"""The backup service's errors, each with its CBR code.

Codes from the CBR v3 API where one fits (`BackupService.7003`: the disk's status forbids the operation);
the 65xx codes are ours, for rules CBR checks without publishing a code:

  6501 invalid name               6502 invalid disk size          6503 disk can only grow
  6504 malformed id               6505 invalid paging             6506 object type missing or unknown
  6507 unknown status filter      6508 invalid server disk list   6509 invalid time range
  6510 unknown operation type     6511 project id unusable by the local provider
  6521 disk not found             6522 server not found           6523 file system not found
  6524 task not found             6540 task already final (cannot be cancelled)
  6560 the disk pool's file system has no room for the disk
  67xx checkpoints, backups, restores, maintenance jobs and reads out of backups (listed with their classes below)
  69xx the region-to-region transfer this region serves as a destination (RegionTransferService.69NN)
"""
from __future__ import annotations

from cbr_common import errors


class InvalidNameError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6501"


class InvalidDiskSizeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6502"


class DiskShrinkError(errors.InvalidArgumentError):
    """Disks only grow: shrinking would cut data off the end."""
    cbr_code = "BackupService.6503"


class InvalidIdError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6504"


class InvalidPagingError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6505"


class InvalidObjectTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6506"


class InvalidStatusError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6507"


class InvalidServerDisksError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6508"


class InvalidTimeRangeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6509"


class InvalidOperationTypeError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6510"


class InvalidProjectError(errors.InvalidArgumentError):
    """The caller's project id cannot name a folder of the local provider."""
    cbr_code = "BackupService.6511"


class ProtectableNotFoundError(errors.NotFoundError):
    """Base of the three resource kinds; also what another project's ids answer."""


class DiskNotFoundError(ProtectableNotFoundError):
    cbr_code = "BackupService.6521"


class ServerNotFoundError(ProtectableNotFoundError):
    cbr_code = "BackupService.6522"


class FileSystemNotFoundError(ProtectableNotFoundError):
    cbr_code = "BackupService.6523"


class TaskNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6524"


class DiskStatusError(errors.FailedPreconditionError):
    """The disk is attached to a server (or in error), which forbids deleting or attaching it."""
    cbr_code = "BackupService.7003"


class TaskNotCancellableError(errors.FailedPreconditionError):
    cbr_code = "BackupService.6540"


class PoolCapacityError(errors.ResourceExhaustedError):
    """The local provider's file system refused the size (no space, quota, or past its largest file)."""
    cbr_code = "BackupService.6560"


# Checkpoints, backups and their jobs.

class InvalidDescriptionError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6701"


class InvalidSortError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6702"


class InvalidResourceListError(errors.InvalidArgumentError):
    """Too many resources, a resource named twice, or one that is not in the vault."""
    cbr_code = "BackupService.6703"


class InvalidRestoreRequestError(errors.InvalidArgumentError):
    """Fields that do not fit the backup's type, or bad mappings."""
    cbr_code = "BackupService.6704"


class InvalidTargetPathError(errors.InvalidArgumentError):
    """A file-system restore path that is absolute, has '..' or other unsafe parts."""
    cbr_code = "BackupService.6705"


class TargetTooSmallError(errors.InvalidArgumentError):
    """A new or target disk smaller than the backed-up disk."""
    cbr_code = "BackupService.6706"


class InvalidGraceError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6707"


class InvalidRetentionDaysError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6708"


class InvalidRequestIdError(errors.InvalidArgumentError):
    cbr_code = "BackupService.6709"


class RequestIdReusedError(errors.AlreadyExistsError):
    """The request_id already made a checkpoint of another vault."""
    cbr_code = "BackupService.6710"


class VaultNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6720"


class BackupNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6721"


class CheckpointNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6722"


class VaultStateError(errors.FailedPreconditionError):
    """The vault cannot take backups now: a replication vault, or frozen, deleting or in error."""
    cbr_code = "BackupService.6730"


class BackupStateError(errors.FailedPreconditionError):
    """The backup's status forbids the operation (not available, or busy with another job)."""
    cbr_code = "BackupService.6731"


class ResourceBusyError(errors.FailedPreconditionError):
    """Another backup or restore of the resource is waiting or running: one job per resource at a time."""
    cbr_code = "BackupService.6732"


class BackupLockedError(errors.FailedPreconditionError):
    """An automatic backup of a locked vault cannot be deleted before it expires."""
    cbr_code = "BackupService.6733"


class ChildBackupError(errors.FailedPreconditionError):
    """A server backup's per-disk backup goes with its server backup; it is not deleted alone."""
    cbr_code = "BackupService.6734"


class ResourceProtectedError(errors.FailedPreconditionError):
    """A vault protects the disk, server or file system: it is deleted only once it was removed from the vault."""
    cbr_code = "BackupService.6735"


class VaultFullError(errors.ResourceExhaustedError):
    """The vault's used bytes would pass its capacity and auto_expand is off."""
    cbr_code = "BackupService.6740"


class BackupCorruptError(errors.DataLossError):
    """Verify found a chunk this backup needs missing or damaged."""
    cbr_code = "BackupService.6750"


class StoreFullError(errors.ResourceExhaustedError):
    """The chunk store has no room left (ENOSPC or a quota on its file system, or an S3 quota): no retry can
    cure it until space is freed or the store grows. What the failed backup stored is reclaimed by GC."""
    cbr_code = "BackupService.6762"


# 69xx: the region-to-region transfer this region serves as a destination (DESIGN.md 17.10)

class NotAPeerError(errors.PermissionDeniedError):
    """The caller is not a region_peer of a region this region's directory names."""
    cbr_code = "RegionTransferService.6921"


class ReplicaVaultNotFoundError(errors.NotFoundError):
    cbr_code = "RegionTransferService.6907"


class ReplicaVaultTypeError(errors.FailedPreconditionError):
    """Not a replication vault, or not of the source backup's resource type."""
    cbr_code = "RegionTransferService.6908"


class ReplicaVaultFullError(errors.ResourceExhaustedError):
    cbr_code = "RegionTransferService.6909"


class InvalidTransferRequestError(errors.InvalidArgumentError):
    """A malformed id or a source backup description that cannot become a replica."""
    cbr_code = "RegionTransferService.6911"


class TransferNotFoundError(errors.NotFoundError):
    """Unknown, aborted or expired transfer."""
    cbr_code = "RegionTransferService.6950"


class NamespaceKeyMismatchError(errors.FailedPreconditionError):
    cbr_code = "RegionTransferService.6951"


class InvalidManifestError(errors.InvalidArgumentError):
    """A manifest or delta that does not rebuild what it names (parent digest, runs, target digest)."""
    cbr_code = "RegionTransferService.6952"


class ChunkCheckFailedError(errors.DataLossError):
    cbr_code = "RegionTransferService.6953"


class ChunkNotWantedError(errors.InvalidArgumentError):
    cbr_code = "RegionTransferService.6954"


class ChunksMissingError(errors.FailedPreconditionError):
    cbr_code = "RegionTransferService.6955"


class DigestMismatchError(errors.FailedPreconditionError):
    cbr_code = "RegionTransferService.6956"


class DictionaryCheckFailedError(errors.DataLossError):
    cbr_code = "RegionTransferService.6957"


# Reads out of a backup (DESIGN.md 18)

class InvalidReadRangeError(errors.InvalidArgumentError):
    """A negative offset or length, or a range that passes the end of the image or file."""
    cbr_code = "BackupService.6771"


class InvalidTreePathError(errors.InvalidArgumentError):
    """A path inside a file-system backup with '..', '.', NUL or over-long parts."""
    cbr_code = "BackupService.6772"


class TreePathNotFoundError(errors.NotFoundError):
    cbr_code = "BackupService.6773"


class WrongBackupKindError(errors.InvalidArgumentError):
    """A path asked of a disk backup, an image range of a file-system backup, or a server backup read whole."""
    cbr_code = "BackupService.6774"


class NotAFileError(errors.InvalidArgumentError):
    """A file read of a path that is a directory, a symlink or a FIFO."""
    cbr_code = "BackupService.6775"

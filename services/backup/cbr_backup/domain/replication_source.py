"""The source side of a replication (DESIGN.md 17): which backups may be sent, and the pure rules of sending them:
chunks in pack order (each pack read front to back), in messages of at most 4 MiB, with at most 48 MiB
unacknowledged.

Codes: ReplicationService.69xx for what the source decides itself (17.10); a destination's refusal keeps the
destination's code (RegionTransferService.69xx).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from cbr_backup.domain import errors as backup_errors
from cbr_backup.domain.backups import Backup
from cbr_common import errors

MESSAGE_LIMIT = 4 << 20    # bytes of chunk payload per PutChunks message (one larger chunk goes alone)
WINDOW = 48 << 20          # message bytes sent beyond the destination's durable_through_seq
READ_BATCH = 4 << 20       # stored bytes read from the store at once (grouped by pack, sent in that order)
CHUNK_OVERHEAD = 64        # a WireChunk's fields besides its payload, serialized (id, sizes, flags, tag, tags)
READABLE_STATUSES = ("available", "restoring")  # a restore reads the backup too; nothing changes its chunks


class DestinationRegionUnknownError(errors.InvalidArgumentError):
    cbr_code = "ReplicationService.6901"


class SourceBackupNotFoundError(errors.NotFoundError):
    cbr_code = "ReplicationService.6903"


class SourceBackupNotAvailableError(errors.FailedPreconditionError):
    cbr_code = "ReplicationService.6904"


class SourceBackupIsReplicaError(errors.FailedPreconditionError):
    cbr_code = "ReplicationService.6905"


class SourceBackupCorruptError(errors.FailedPreconditionError):
    cbr_code = "ReplicationService.6906"


class PeerUnreachableError(errors.CbrError):
    """The destination region did not answer. Not an outage of this region's own dependencies (which would hold
    the job indefinitely): each attempt counts, and the last fails the task with this code."""
    cbr_code = "ReplicationService.6920"
    task_code = cbr_code


class PeerRefusedCredentialError(errors.PermissionDeniedError):
    cbr_code = "ReplicationService.6921"


class PeerRefusedError(errors.FailedPreconditionError):
    """The destination refused a call for a reason of its own; cbr_code is the destination's code."""
    cbr_code = "RegionTransferService.6900"


class ChunkRejectedTwiceError(errors.DataLossError):
    """The destination rejected a chunk's second copy too: the source's own copy is damaged (a verify finds it)."""
    cbr_code = "ReplicationService.6953"


class ReplicaDigestsDifferError(errors.FailedPreconditionError):
    cbr_code = "ReplicationService.6956"


class ChunkNotReplicatedError(errors.PermissionDeniedError):
    """The destination asked for a chunk that no manifest of this transfer names: never served."""
    cbr_code = "ReplicationService.6959"


def check_replicable(backup: Backup | None, backup_id: str, vault_id: str = "") -> Backup:
    """A backup may be replicated: it exists (in the vault named), is whole and readable, not corrupt and not
    itself a replica. The replication service checked the same; the backup may have changed since."""
    if backup is None or (vault_id and backup.vault_id != vault_id):
        raise SourceBackupNotFoundError(f"backup {backup_id} not found")
    if backup.parent_id:
        raise SourceBackupNotAvailableError(
            f"backup {backup_id} is one disk of server backup {backup.parent_id}; replicate that one")
    if backup.image_type == "replication":
        raise SourceBackupIsReplicaError(f"backup {backup_id} is a replica; replicas are never replicated")
    busy = [b for b in (backup, *backup.children) if b.status not in READABLE_STATUSES]
    if busy:
        raise SourceBackupNotAvailableError(f"backup {busy[0].backup_id} is {busy[0].status}; only available "
                                            f"backups are replicated")
    if backup.corrupt or any(c.corrupt for c in backup.children):
        raise SourceBackupCorruptError(f"backup {backup_id} failed its last verify; a corrupt backup is not "
                                       f"replicated")
    return backup


def check_not_replicating(backup_id: str, task_id: str | None) -> None:
    """DeleteBackup of a backup whose replication task is waiting or running is refused as busy (17.9)."""
    if task_id:
        raise backup_errors.BackupStateError(
            f"backup {backup_id} is being replicated (task {task_id}); it cannot be deleted until that task ends")


def manifest_parts(backup: Backup) -> list[Backup]:
    """The rows whose manifests cross: a server backup's disks (in device order), or the backup itself."""
    if backup.resource_type == "server":
        return sorted(backup.children, key=lambda c: (len(c.device), c.device, c.backup_id))
    return [backup]


def combined_digest(digests: Sequence[bytes]) -> bytes:
    """A record's manifest digest: the manifest's own, or a server's disks' digests in device order, joined."""
    return b"".join(digests)


# Reading: which ids go together, and from where

@dataclass(frozen=True)
class Reads:
    packs: list[tuple[bytes, list[tuple[int, int, bytes]]]]  # (pack id, [(offset, length, id)] by offset)
    lone: list[bytes]       # chunks stored as their own object (vaults from before packs)
    missing: list[bytes]    # the index does not know them


def group_reads(ids: Iterable[bytes], locations: dict[bytes, tuple[bytes | None, int, int]]) -> Reads:
    """The ids grouped by the pack holding them, each pack's sorted by offset (ranged reads, DESIGN.md 13.3);
    packs in the order their first chunk comes in ids."""
    by_pack: dict[bytes, list[tuple[int, int, bytes]]] = defaultdict(list)
    lone, missing = [], []
    for chunk in ids:
        where = locations.get(chunk)
        if where is None:
            missing.append(chunk)
        elif where[0] is None:
            lone.append(chunk)
        else:
            by_pack[where[0]].append((where[1], where[2], chunk))
    return Reads([(pack, sorted(entries)) for pack, entries in by_pack.items()], lone, missing)


def send_order(ids: Iterable[bytes], locations: dict[bytes, tuple[bytes | None, int, int]]
               ) -> list[tuple[bytes, bytes]]:
    """(id, position) of each id, in the order they are sent (DESIGN.md 17.6): packed chunks by pack and offset, so
    every pack is read front to back once (sequential reads, not one seek per chunk as in id order); then lone
    chunks by id; ids without a location last (their read fails the job). Positions compare as bytes: the job
    row's sent_through is the last position handed to the destination (17.9)."""
    def position(chunk: bytes) -> bytes:
        where = locations.get(chunk)
        if where is None:
            return b"\x02" + chunk
        if where[0] is None:
            return b"\x01" + chunk
        return b"\x00" + where[0] + where[1].to_bytes(8, "big")
    return sorted(((chunk, position(chunk)) for chunk in ids), key=lambda pair: pair[1])


def read_batches(ids: Sequence[bytes], stored: dict[bytes, int], limit: int = READ_BATCH) -> list[list[bytes]]:
    """Consecutive runs of ids (in their order) of at most limit stored bytes each (at least one id each)."""
    batches: list[list[bytes]] = []
    size = 0
    for chunk in ids:
        n = stored.get(chunk, 0)
        if not batches or (size + n > limit and batches[-1]):
            batches.append([])
            size = 0
        batches[-1].append(chunk)
        size += n
    return batches


def split_messages(sizes: Sequence[int], limit: int = MESSAGE_LIMIT,
                   overhead: int = CHUNK_OVERHEAD) -> list[range]:
    """Index ranges of consecutive chunks (payload sizes) per message: each at most limit bytes with its
    per-chunk overhead, except a chunk that alone is larger, which goes alone."""
    messages: list[range] = []
    start, size = 0, 0
    for i, n in enumerate(sizes):
        if i > start and size + n + overhead > limit:
            messages.append(range(start, i))
            start, size = i, 0
        size += n + overhead
    if start < len(sizes):
        messages.append(range(start, len(sizes)))
    return messages


@dataclass
class SendWindow:
    """Bytes of PutChunks messages not yet durable at the destination (17.8): a message goes only while what is
    unacknowledged stays within the window (one message alone always may go)."""
    limit: int = WINDOW
    durable_through: int = 0
    _sizes: dict[int, int] = field(default_factory=dict)  # seq -> bytes, above durable_through
    _unacked: int = 0

    @property
    def unacked(self) -> int:
        return self._unacked

    @property
    def last_seq(self) -> int:
        return max(self._sizes, default=self.durable_through)

    def room_for(self, size: int) -> bool:
        return self._unacked == 0 or self._unacked + size <= self.limit

    def sent(self, seq: int, size: int) -> None:
        if seq <= self.durable_through or seq in self._sizes:
            raise ValueError(f"message {seq} was sent already")
        self._sizes[seq] = size
        self._unacked += size

    def acked(self, durable_through: int) -> int:
        """The destination made every message up to durable_through durable; returns the bytes freed."""
        freed = 0
        if durable_through > self.durable_through:
            for seq in [s for s in self._sizes if s <= durable_through]:
                freed += self._sizes.pop(seq)
            self.durable_through = durable_through
            self._unacked -= freed
        return freed

    @property
    def drained(self) -> bool:
        return not self._sizes

"""Rebuilds a vault's rows in the `backup` schema from its store and the key provider alone (DESIGN.md 14.3):
the vault_keys row from the store's keys object, a replication vault's namespaces from their key objects (17.3),
the chunk index from pack trailers (and lone chunk files that a backup names), the backups (available) and their
checkpoints from the backup records."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath import packs as packfiles
from cbr_backup.datapath import records as recordfiles
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.domain.backups import Backup, Checkpoint
from cbr_backup.keys import KeyProvider, KeyUnwrapError, unwrap_vault_keys
from cbr_backup.transfer.namespaces import read_namespace_objects, unwrap_namespace_key
from cbr_backup.worker import manifests
from cbr_common.db import utcnow
from cbr_common.errors import DataLossError


_PACK_NAME = re.compile(r"[0-9a-f]{32}")  # what pack_key() writes


class RebuildRefused(Exception):
    """The rebuild would not be safe or possible as asked (rows exist, no keys object this KEK opens, ...)."""


@dataclass
class FromStore:
    """What the store says the vault's rows are."""
    keys_object: recordfiles.KeysObject
    keys: VaultKeys
    backups: list[Backup] = field(default_factory=list)         # parents before their disks
    checkpoints: list[Checkpoint] = field(default_factory=list)
    chunk_rows: list[packfiles.Row] = field(default_factory=list)
    namespaces: list[dict] = field(default_factory=list)         # replica_namespaces rows the KEK opens
    packs: int = 0
    lone_chunks: int = 0
    records: int = 0
    skipped: list[str] = field(default_factory=list)            # why a record or pack was not used
    missing_chunks: int = 0                                      # named by a backup, found nowhere


def open_keys(store, provider: KeyProvider, vault_id: str) -> tuple[recordfiles.KeysObject, VaultKeys]:
    """The vault's keys object that this provider opens (the one of its current KEK first)."""
    found = recordfiles.read_keys_objects(store, vault_id)
    if not found:
        raise RebuildRefused(f"the store has no keys object for vault {vault_id} (no backup ever completed there, "
                             f"or it is not this store's vault)")
    found.sort(key=lambda o: o.wrapped.kek_id != provider.kek_id)
    for obj in found:
        if obj.vault_id != vault_id:
            continue
        try:
            return obj, unwrap_vault_keys(provider, vault_id, obj.wrapped)
        except KeyUnwrapError:
            continue
    raise RebuildRefused(f"no keys object of vault {vault_id} opens with this KEK ({provider.kek_id}); the store "
                         f"has them wrapped by {sorted(o.wrapped.kek_id for o in found)}")


def choose_records(found: list[recordfiles.BackupRecord], manifests_present: set[str]) -> list[list]:
    """Per backup, the records of one run that became (or would have become) available: every part's manifest in
    the store, all its parts there; of several such runs (an attempt that stopped between its record and its
    commit, then a retry), the latest protected one. Returns a list of record groups."""
    runs: dict[tuple[str, str], list] = defaultdict(list)
    for record in found:
        runs[(record.top_level_id, record.run_id)].append(record)
    best: dict[str, list] = {}
    for (top_id, _run), group in runs.items():
        if len(group) != group[0].parts or any(r.manifest_id not in manifests_present for r in group):
            continue
        row = group[0].parent or group[0].backup
        if top_id not in best or (row["protected_time"] or "") > _protected(best[top_id]):
            best[top_id] = group
    return [best[top_id] for top_id in sorted(best)]


def _protected(group: list) -> str:
    return (group[0].parent or group[0].backup)["protected_time"] or ""


def read_store(store, provider: KeyProvider, vault_id: str, project_id: str = "") -> FromStore:
    """Everything the rows will be rebuilt from, read and checked; writes nothing."""
    keys_object, keys = open_keys(store, provider, vault_id)
    out = FromStore(keys_object, keys)
    out.namespaces = _read_namespaces(store, provider, vault_id, out)
    found = _read_records(store, keys, vault_id, project_id, out)
    present = {key.rsplit("/", 1)[1] for key in store.iterate(f"{vault_id}/manifests/")}
    groups = choose_records(found, present)
    out.records = len(found)
    needed: dict[bytes, int] = {}  # chunk -> raw size, of every chosen backup
    by_backup: dict[str, set[bytes]] = {}
    checkpoints: dict[str, Checkpoint] = {}
    for group in groups:
        first = group[0]
        if first.parent is not None:
            out.backups.append(_row(first.parent))
        for record in sorted(group, key=lambda r: r.backup.get("device") or ""):
            backup = _row(record.backup)
            try:
                sizes = manifests.chunk_sizes(manifests.load(store, keys, backup))
            except DataLossError as exc:
                out.skipped.append(f"manifest {backup.manifest_id}: {exc}")
                backup.corrupt = True
                sizes = {}
            needed.update(sizes)
            by_backup[backup.backup_id] = set(sizes)
            out.backups.append(backup)
        cp = first.checkpoint
        if cp and cp["checkpoint_id"] not in checkpoints:
            row = first.parent or first.backup
            checkpoints[cp["checkpoint_id"]] = Checkpoint(project_id=row["project_id"], vault_id=vault_id,
                                                          **recordfiles.times(cp))
    out.checkpoints = list(checkpoints.values())
    located = _read_packs(store, keys, vault_id, out)
    out.chunk_rows = list(located.values())
    missing = _read_lone_chunks(store, vault_id, needed, located, out)
    out.missing_chunks = len(missing)
    for backup in out.backups:  # a backup that needs a chunk found nowhere is corrupt (its server backup too)
        if by_backup.get(backup.backup_id, set()) & missing:
            backup.corrupt = True
    corrupt_parents = {b.parent_id for b in out.backups if b.corrupt and b.parent_id}
    for backup in out.backups:
        backup.corrupt = backup.corrupt or backup.backup_id in corrupt_parents
    return out


def _read_namespaces(store, provider: KeyProvider, vault_id: str, out: FromStore) -> list[dict]:
    """The namespaces whose key object this KEK opens (one per namespace: a rotation cut short leaves two)."""
    found: dict[str, dict] = {}
    try:
        objects = read_namespace_objects(store, vault_id)
    except DataLossError as exc:
        out.skipped.append(str(exc))
        return []
    for row in objects:
        if row["vault_id"] != vault_id or row["namespace_id"] in found:
            continue
        try:
            unwrap_namespace_key(provider, vault_id, row["namespace_id"], row["kek_id"], row["wrapped_id_key"])
        except KeyUnwrapError as exc:
            out.skipped.append(f"namespace {row['namespace_id']}: {exc}")
            continue
        found[row["namespace_id"]] = row
    return list(found.values())


def _read_records(store, keys: VaultKeys, vault_id: str, project_id: str, out: FromStore) -> list:
    found = []
    prefix = recordfiles.records_prefix(vault_id)
    for key in sorted(store.iterate(prefix)):
        manifest_id = key[len(prefix):]
        try:
            record = recordfiles.decode_record(keys, vault_id, manifest_id, store.get(key))
        except (DataLossError, ChunkNotFoundError) as exc:
            out.skipped.append(f"record {key}: {exc}")
            continue
        if project_id and record.backup["project_id"] != project_id:
            raise RebuildRefused(f"record {key} belongs to project {record.backup['project_id']}, not {project_id}")
        found.append(record)
    return found


def _read_packs(store, keys: VaultKeys, vault_id: str, out: FromStore) -> dict[bytes, packfiles.Row]:
    """Every chunk the vault's packs hold, from their trailers; a chunk in two packs (a retry's, a repack cut
    short) takes the first pack in key order: each holds a durable, checked copy."""
    codec = ChunkCodec(keys)
    located: dict[bytes, packfiles.Row] = {}
    prefix = packfiles.pack_prefix(vault_id)
    names = sorted(key[len(prefix):] for key in store.iterate(prefix))
    for pack_id in (bytes.fromhex(n) for n in names if _PACK_NAME.fullmatch(n)):
        key = packfiles.pack_key(vault_id, pack_id)
        try:
            entries = packfiles.read_pack_entries(store, codec, key)
        except (DataLossError, ChunkNotFoundError) as exc:
            out.skipped.append(f"pack {key}: {exc}")
            continue
        out.packs += 1
        for e in entries:
            located.setdefault(e.chunk, (e.chunk, e.raw_size, e.length, pack_id, e.offset))
    return located


def _read_lone_chunks(store, vault_id: str, needed: dict[bytes, int], located: dict, out: FromStore) -> set[bytes]:
    """Rows for the lone chunk files (vaults from before packs) that a chosen backup names and no pack holds; their
    raw size comes from the manifest, their stored size from the value. Returns the ids found nowhere."""
    wanted = [chunk for chunk in needed if chunk not in located]
    if not wanted:
        return set()
    present = store.exists_many([packfiles.chunk_key(vault_id, c) for c in wanted])
    missing = set()
    for chunk in wanted:
        key = packfiles.chunk_key(vault_id, chunk)
        if key not in present:
            missing.add(chunk)
            continue
        row = (chunk, needed[chunk], len(store.get(key)), None, None)
        located[chunk] = row
        out.chunk_rows.append(row)
        out.lone_chunks += 1
    return missing


def _row(values: dict) -> Backup:
    return Backup(**recordfiles.times(values), status="available")


# Writing the rows

@dataclass(frozen=True)
class RebuildSummary:
    backups: int            # backup rows made (a server backup and its disks count each)
    top_level: int          # of which top-level backups
    checkpoints: int
    chunks: int             # chunk index rows written
    packs: int              # packs read
    lone_chunks: int
    records: int            # records read
    skipped: tuple[str, ...]
    corrupt: tuple[str, ...]  # backups made corrupt: a chunk or manifest they need is not in the store
    kek_id: str
    encrypted: bool
    namespaces: int = 0     # a replication vault's namespaces (their wrapped id keys)

    def lines(self, vault_id: str) -> list[str]:
        out = [f"vault {vault_id}: keys wrapped by {self.kek_id} ({'encrypted' if self.encrypted else 'unencrypted'})",
               f"backups: {self.backups} rows ({self.top_level} top level) from {self.records} records; "
               f"checkpoints: {self.checkpoints}",
               f"chunks: {self.chunks} index rows from {self.packs} packs and {self.lone_chunks} lone chunk files",
               f"replica namespaces: {self.namespaces}"]
        out += [f"skipped {reason}" for reason in self.skipped]
        out += [f"corrupt backup {backup_id} (a chunk or manifest it needs is missing)" for backup_id in self.corrupt]
        return out


async def existing_rows(uow, vault_id: str) -> dict[str, int]:
    """The vault's rows in the backup schema, per table (what a rebuild would add to)."""
    from sqlalchemy import func, select

    from cbr_backup.adapters.tables import backups, checkpoints, chunks, replica_namespaces, vault_keys
    counts = {}
    for table in (vault_keys, replica_namespaces, backups, checkpoints, chunks):
        counts[table.name] = (await uow.session.execute(
            select(func.count()).select_from(table).where(table.c.vault_id == vault_id))).scalar_one()
    return counts


async def write_rows(uow, index, contents: FromStore, vault_id: str) -> tuple[int, int, int]:
    """The vault's keys row, chunk rows, checkpoints and backups, adding only what is missing (so that a second
    run changes nothing). Chunk rows go first (own statements): no backup row is there before its chunks."""
    import asyncio

    await asyncio.to_thread(index.record_new, vault_id, contents.chunk_rows)
    if await uow.backups.vault_keys(vault_id) is None:
        await uow.backups.add_vault_keys(vault_id, contents.keys_object.wrapped)
    from cbr_backup.transfer.repository import TransferRepository
    transfers = TransferRepository(uow.session)
    for row in contents.namespaces:  # before the replicas that need them
        await transfers.add_namespace(**row)
    checkpoints = backups = 0
    for cp in contents.checkpoints:
        if await uow.backups.get_checkpoint(cp.project_id, cp.checkpoint_id) is None:
            await uow.backups.add_checkpoint(cp)
            checkpoints += 1
    now = utcnow()
    for backup in contents.backups:
        if await uow.backups.get_backup(backup.project_id, backup.backup_id) is None:
            backup.updated_time = now
            await uow.backups.add_backup(backup)
            backups += 1
    return backups, checkpoints, len(contents.chunk_rows)


# The other way: records for backups made before the store kept them

async def backfill_records(uow, store, provider: KeyProvider, vault_id: str) -> tuple[int, int]:
    """Writes the keys object and the records of the vault's available backups that have none in the store
    (backups made before records were written), and its namespaces' key objects, from their rows. (backups given
    records, backups that had them)."""
    import asyncio

    from cbr_backup.keys.vault_keys import WrappedVaultKeys

    wrapped = await uow.backups.vault_keys(vault_id)
    if not isinstance(wrapped, WrappedVaultKeys):
        raise RebuildRefused(f"vault {vault_id} has no wrapped keys row (start the backup service once: it wraps "
                             f"clear keys from before)")
    keys = unwrap_vault_keys(provider, vault_id, wrapped)
    from cbr_backup.transfer.namespaces import put_namespace_object
    from cbr_backup.transfer.repository import TransferRepository
    for row in await TransferRepository(uow.session).namespaces(vault_id):
        await asyncio.to_thread(put_namespace_object, store, row)
    written = had = 0
    for top in await uow.backups.vault_top_level(vault_id):
        if top.status != "available":
            continue
        backup = await uow.backups.get_backup(top.project_id, top.backup_id)
        cp = await uow.backups.get_checkpoint(backup.project_id, backup.checkpoint_id)
        made = recordfiles.records_for(backup, recordfiles.checkpoint_fields(cp) if cp else {}, "backfill")
        names = [recordfiles.record_key(vault_id, r.manifest_id) for r in made]
        if any(not r.manifest_id for r in made):
            continue  # no manifest: nothing to rebuild it from
        if await asyncio.to_thread(store.exists_many, names):
            had += 1  # a record of it exists (a completed run's): the rebuild will find that one
            continue
        keys_object = recordfiles.KeysObject(vault_id, backup.project_id, wrapped)
        await asyncio.to_thread(recordfiles.write_records, store, keys, vault_id, keys_object, made)
        written += 1
    return written, had

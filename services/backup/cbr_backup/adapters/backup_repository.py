"""Reads and writes checkpoints, backups, vault keys and the one-job-per-resource guard (`backup` schema)."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_backup.adapters.id_lists import ids_in
from cbr_backup.adapters.tables import (backups, checkpoints, chunks, replica_dictionaries, replica_namespaces,
                                        resource_jobs, vault_keys)
from cbr_backup.domain.backups import Backup, BackupFilter, Checkpoint, SkippedResource
from cbr_backup.keys.vault_keys import WrappedVaultKeys
from cbr_common.db import utcnow

# Backups whose manifest is (or may become) needed: everything GC must keep.
LIVE_STATUSES = ("available", "deleting", "restoring", "waiting_delete", "waiting_restore")
_ID_FIELDS = ("parent_id", "policy_id", "manifest_id", "base_backup_id", "task_id", "device", "namespace_id",
              "source_region", "source_project_id", "source_vault_id", "source_backup_id", "replication_record_id")


class BackupRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    # Checkpoints

    async def add_checkpoint(self, cp: Checkpoint) -> None:
        await self._s.execute(insert(checkpoints).values(
            checkpoint_id=cp.checkpoint_id, project_id=cp.project_id, vault_id=cp.vault_id, name=cp.name,
            description=cp.description, incremental=cp.incremental, auto_trigger=cp.auto_trigger,
            policy_id=cp.policy_id or None, created_time=cp.created_time, request_id=cp.request_id or None,
            skipped=[s.__dict__ for s in cp.skipped]))

    async def checkpoint_for_request(self, project_id: str, request_id: str) -> str | None:
        """The checkpoint an earlier call with this request_id made; holds the key's lock to the end of the
        transaction, so two calls with one key never both make one."""
        await self._s.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(
            f"checkpoint-request:{project_id}:{request_id}", 0))))
        return (await self._s.execute(select(checkpoints.c.checkpoint_id).where(
            checkpoints.c.project_id == project_id, checkpoints.c.request_id == request_id))).scalar_one_or_none()

    async def get_checkpoint(self, project_id: str, checkpoint_id: str) -> Checkpoint | None:
        row = (await self._s.execute(select(checkpoints).where(
            checkpoints.c.checkpoint_id == checkpoint_id, checkpoints.c.project_id == project_id))).mappings().first()
        if row is None:
            return None
        cp = Checkpoint(checkpoint_id=row["checkpoint_id"], project_id=row["project_id"], vault_id=row["vault_id"],
                        name=row["name"], description=row["description"], incremental=row["incremental"],
                        auto_trigger=row["auto_trigger"], policy_id=row["policy_id"] or "",
                        skipped=[SkippedResource(**s) for s in row["skipped"]], created_time=row["created_time"],
                        request_id=row["request_id"] or "")
        found = (await self._s.execute(select(backups).where(
            backups.c.checkpoint_id == checkpoint_id, backups.c.parent_id.is_(None))
            .order_by(backups.c.created_time, backups.c.backup_id))).mappings().all()
        cp.backups = [_backup(r) for r in found]
        return cp

    # Backups

    async def add_backup(self, b: Backup) -> None:
        row = {k: v for k, v in b.__dict__.items() if k != "children"}
        row.update({f: getattr(b, f) or None for f in _ID_FIELDS})
        await self._s.execute(insert(backups).values(**row))

    async def get_backup(self, project_id: str, backup_id: str, for_update: bool = False) -> Backup | None:
        query = select(backups).where(backups.c.backup_id == backup_id, backups.c.project_id == project_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        if row is None:
            return None
        backup = _backup(row)
        backup.children = await self.children(backup.backup_id)
        return backup

    async def children(self, parent_id: str) -> list[Backup]:
        rows = (await self._s.execute(select(backups).where(backups.c.parent_id == parent_id)
                                      .order_by(func.length(backups.c.device), backups.c.device))).mappings().all()
        return [_backup(r) for r in rows]

    async def list_backups(self, flt: BackupFilter, limit: int, offset: int) -> tuple[list[Backup], int]:
        c = backups.c
        where = [c.project_id == flt.project_id]
        for column, value in ((c.vault_id, flt.vault_id), (c.resource_id, flt.resource_id),
                              (c.resource_type, flt.resource_type), (c.image_type, flt.image_type),
                              (c.checkpoint_id, flt.checkpoint_id), (c.parent_id, flt.parent_id)):
            if value:
                where.append(column == value)
        if flt.top_level and not flt.parent_id and not flt.resource_id:
            where.append(c.parent_id.is_(None))
        if flt.statuses:
            where.append(c.status.in_(flt.statuses))
        if flt.start_time is not None:
            where.append(c.created_time >= flt.start_time)
        if flt.end_time is not None:
            where.append(c.created_time < flt.end_time)
        if flt.name:
            where.append(c.name.contains(flt.name, autoescape=True))
        count = (await self._s.execute(select(func.count()).select_from(backups).where(and_(*where)))).scalar_one()
        order = [getattr(c, key).desc().nulls_last() if desc else getattr(c, key).asc().nulls_last()
                 for key, desc in flt.sort]
        rows = (await self._s.execute(select(backups).where(and_(*where)).order_by(*order, c.backup_id)
                                      .limit(limit).offset(offset))).mappings().all()
        found = [_backup(r) for r in rows]
        for backup in found:
            if backup.resource_type == "server" and not backup.parent_id:
                backup.children = await self.children(backup.backup_id)
        return found, count

    async def update_backup(self, backup_id: str, **values) -> None:
        values.setdefault("updated_time", utcnow())
        await self._s.execute(update(backups).where(backups.c.backup_id == backup_id).values(**values))

    async def update_family(self, backup_id: str, **values) -> None:
        """The backup and its per-disk children."""
        values.setdefault("updated_time", utcnow())
        await self._s.execute(update(backups).where(
            or_(backups.c.backup_id == backup_id, backups.c.parent_id == backup_id)).values(**values))

    async def delete_family(self, backup_id: str) -> None:
        await self._s.execute(delete(backups).where(
            or_(backups.c.backup_id == backup_id, backups.c.parent_id == backup_id)))

    async def latest_with_manifest(self, vault_id: str, resource_id: str, kind: str) -> Backup | None:
        """The newest available backup of the resource in the vault: the next backup reads only changes."""
        row = (await self._s.execute(select(backups).where(
            backups.c.vault_id == vault_id, backups.c.resource_id == resource_id, backups.c.manifest_kind == kind,
            backups.c.status == "available", backups.c.manifest_id.is_not(None), backups.c.corrupt.is_(False))
            .order_by(backups.c.protected_time.desc()).limit(1))).mappings().first()
        return None if row is None else _backup(row)

    async def vault_backups(self, vault_id: str, statuses: Sequence[str] = LIVE_STATUSES,
                            backup_ids: Sequence[str] = ()) -> list[Backup]:
        """Backups of the vault with a manifest (per-disk children included, server parents not)."""
        where = [backups.c.vault_id == vault_id, backups.c.status.in_(statuses), backups.c.manifest_id.is_not(None)]
        if backup_ids:
            where.append(or_(backups.c.backup_id.in_(backup_ids), backups.c.parent_id.in_(backup_ids)))
        rows = (await self._s.execute(select(backups).where(*where))).mappings().all()
        return [_backup(r) for r in rows]

    async def oldest_running_start(self, vault_id: str) -> dt.datetime | None:
        return (await self._s.execute(select(func.min(backups.c.started_time)).where(
            backups.c.vault_id == vault_id, backups.c.status == "protecting"))).scalar_one()

    async def used_bytes(self, vault_id: str) -> int:
        """What the vault's store holds after dedup and compression (the chunk index's stored sizes)."""
        return (await self._s.execute(select(func.coalesce(func.sum(chunks.c.stored_size), 0)).where(
            chunks.c.vault_id == vault_id))).scalar_one()

    async def stored_bytes_of(self, vault_id: str, ids, stored_since: dt.datetime) -> tuple[int, int]:
        """Compressed size of these chunks of the vault, and of those first stored at or after `stored_since`:
        both sums in one statement per 50,000 ids (one array parameter, not one per id)."""
        stored = added = 0
        ids = sorted(ids)
        size = chunks.c.stored_size
        for start in range(0, len(ids), 50_000):
            row = (await self._s.execute(
                select(func.coalesce(func.sum(size), 0),
                       func.coalesce(func.sum(size).filter(chunks.c.created_time >= stored_since), 0))
                .where(chunks.c.vault_id == vault_id, ids_in(chunks.c.digest, ids[start:start + 50_000])))).one()
            stored, added = stored + row[0], added + row[1]
        return stored, added

    async def resource_backups(self, vault_id: str) -> list[dict]:
        """Per resource of the vault: how many backups it has (top level, not failed) and the bytes they added
        to the vault. What the vault service shows as each resource's backup count and size."""
        c = backups.c
        rows = (await self._s.execute(
            select(c.resource_id, func.count(), func.coalesce(func.sum(c.added_bytes), 0))
            .where(c.vault_id == vault_id, c.parent_id.is_(None), c.status.in_(LIVE_STATUSES))
            .group_by(c.resource_id).order_by(c.resource_id))).all()
        return [{"resource_id": r[0], "backup_count": r[1], "backup_size_bytes": int(r[2])} for r in rows]

    # Vault keys

    async def vault_keys(self, vault_id: str, for_update: bool = False) -> WrappedVaultKeys | bytes | None:
        """The vault's wrapped keys; a clear id key (bytes) where a row from before wrapping is left; None."""
        query = select(vault_keys).where(vault_keys.c.vault_id == vault_id)
        row = (await self._s.execute(query.with_for_update() if for_update else query)).mappings().first()
        if row is None:
            return None
        if row["id_key"] is not None:
            return bytes(row["id_key"])
        return _wrapped(row)

    async def add_vault_keys(self, vault_id: str, keys: WrappedVaultKeys) -> None:
        """Records a vault's keys unless it has some already (the event and a first job may race: one wins)."""
        await self._s.execute(pg_insert(vault_keys).values(
            vault_id=vault_id, created_time=utcnow(), **_wrapped_values(keys)).on_conflict_do_nothing())

    async def replace_vault_keys(self, vault_id: str, keys: WrappedVaultKeys) -> None:
        """The same keys wrapped anew (a clear row wrapped, a rotation); the clear column is emptied."""
        await self._s.execute(update(vault_keys).where(vault_keys.c.vault_id == vault_id).values(
            id_key=None, **_wrapped_values(keys)))

    async def vault_ids_with_keys(self) -> list[str]:
        return list((await self._s.execute(select(vault_keys.c.vault_id).order_by(vault_keys.c.vault_id))).scalars())

    async def vault_top_level(self, vault_id: str) -> list[Backup]:
        rows = (await self._s.execute(select(backups).where(backups.c.vault_id == vault_id,
                                                            backups.c.parent_id.is_(None)))).mappings().all()
        return [_backup(r) for r in rows]

    async def forget_vault(self, vault_id: str) -> None:
        """Everything the backup service keeps about a deleted vault once its backups are gone."""
        await self._s.execute(delete(chunks).where(chunks.c.vault_id == vault_id))
        await self._s.execute(delete(vault_keys).where(vault_keys.c.vault_id == vault_id))
        # A replication vault's namespaces are keys like its own (DESIGN.md 17.3): they go with it.
        await self._s.execute(delete(replica_namespaces).where(replica_namespaces.c.vault_id == vault_id))
        await self._s.execute(delete(replica_dictionaries).where(replica_dictionaries.c.vault_id == vault_id))
        await self._s.execute(delete(checkpoints).where(checkpoints.c.vault_id == vault_id))

    # One job per resource

    async def claim_resource(self, resource_id: str, task_id: str, operation_type: str) -> bool:
        inserted = (await self._s.execute(pg_insert(resource_jobs).values(
            resource_id=resource_id, task_id=task_id, operation_type=operation_type, created_time=utcnow())
            .on_conflict_do_nothing().returning(resource_jobs.c.resource_id))).first()
        return inserted is not None

    async def job_of(self, resource_id: str) -> str | None:
        return (await self._s.execute(select(resource_jobs.c.task_id).where(
            resource_jobs.c.resource_id == resource_id))).scalar_one_or_none()

    async def release_resources(self, task_id: str) -> None:
        await self._s.execute(delete(resource_jobs).where(resource_jobs.c.task_id == task_id))


def _backup(row) -> Backup:
    values = {k: row[k] for k in row.keys()}
    values.update({f: values[f] or "" for f in _ID_FIELDS})
    values.update({f: None if values[f] is None else bytes(values[f])
                   for f in ("source_manifest_digest", "manifest_digest")})
    return Backup(**values)


def _wrapped(row) -> WrappedVaultKeys:
    enc = row["wrapped_enc_key"]
    return WrappedVaultKeys(row["kek_id"], bytes(row["wrapped_id_key"]), None if enc is None else bytes(enc))


def _wrapped_values(keys: WrappedVaultKeys) -> dict:
    return {"kek_id": keys.kek_id, "wrapped_id_key": keys.wrapped_id_key, "wrapped_enc_key": keys.wrapped_enc_key}

"""The transfer's rows (backup schema, migration backup_0008): transfers, namespaces, staged manifests, want-lists,
dictionaries, and the replica backups a transfer may use as parents."""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Sequence

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_backup.adapters.id_lists import ids_in
from cbr_backup.adapters.tables import (backups, replica_dictionaries, replica_namespaces, replica_transfer_manifests,
                                        replica_transfer_packs, replica_transfer_wanted, replica_transfers)
from cbr_common.db import utcnow

BATCH = 4096


class TransferRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    # Transfers

    async def add_transfer(self, **row) -> bool:
        """Inserts the transfer unless its (source region, record) has one already; True if this one went in."""
        done = (await self._s.execute(pg_insert(replica_transfers).values(**row).on_conflict_do_nothing()
                                      .returning(replica_transfers.c.transfer_id))).first()
        return done is not None

    async def transfer_for_record(self, source_region: str, record_id: str) -> dict | None:
        row = (await self._s.execute(select(replica_transfers).where(
            replica_transfers.c.source_region == source_region,
            replica_transfers.c.record_id == record_id))).mappings().first()
        return None if row is None else dict(row)

    async def get_transfer(self, transfer_id: str, for_update: bool = False) -> dict | None:
        query = select(replica_transfers).where(replica_transfers.c.transfer_id == transfer_id)
        row = (await self._s.execute(query.with_for_update() if for_update else query)).mappings().first()
        return None if row is None else dict(row)

    async def update_transfer(self, transfer_id: str, **values) -> None:
        values.setdefault("last_activity_time", utcnow())
        await self._s.execute(update(replica_transfers).where(replica_transfers.c.transfer_id == transfer_id)
                              .values(**values))

    async def add_counters(self, transfer_id: str, chunks: int, stored: int, rejected: int) -> None:
        c = replica_transfers.c
        await self._s.execute(update(replica_transfers).where(c.transfer_id == transfer_id).values(
            chunks_received=c.chunks_received + chunks, stored_bytes=c.stored_bytes + stored,
            rejected_chunks=c.rejected_chunks + rejected, last_activity_time=utcnow()))

    async def expire_idle(self, vault_id: str, idle_since: dt.datetime) -> list[str]:
        """Open transfers silent since before idle_since become aborted (DESIGN.md 17.7 step 7); their ids."""
        c = replica_transfers.c
        rows = (await self._s.execute(update(replica_transfers).where(
            c.vault_id == vault_id, c.state == "open", c.last_activity_time < idle_since)
            .values(state="aborted", ended_time=utcnow()).returning(c.transfer_id))).scalars().all()
        for transfer_id in rows:
            await self.forget_wanted(transfer_id)
        return list(rows)

    async def open_transfers(self, vault_id: str) -> list[dict]:
        rows = (await self._s.execute(select(replica_transfers).where(
            replica_transfers.c.vault_id == vault_id, replica_transfers.c.state == "open"))).mappings().all()
        return [dict(r) for r in rows]

    # Namespaces

    async def namespace(self, vault_id: str, source_region: str, source_vault_id: str) -> dict | None:
        row = (await self._s.execute(select(replica_namespaces).where(
            replica_namespaces.c.vault_id == vault_id, replica_namespaces.c.source_region == source_region,
            replica_namespaces.c.source_vault_id == source_vault_id))).mappings().first()
        return None if row is None else dict(row)

    async def namespace_by_id(self, vault_id: str, namespace_id: str) -> dict | None:
        row = (await self._s.execute(select(replica_namespaces).where(
            replica_namespaces.c.vault_id == vault_id,
            replica_namespaces.c.namespace_id == namespace_id))).mappings().first()
        return None if row is None else dict(row)

    async def namespaces(self, vault_id: str) -> list[dict]:
        rows = (await self._s.execute(select(replica_namespaces).where(
            replica_namespaces.c.vault_id == vault_id))).mappings().all()
        return [dict(r) for r in rows]

    async def all_namespaces(self, for_update: bool = False) -> list[dict]:
        query = select(replica_namespaces).order_by(replica_namespaces.c.vault_id, replica_namespaces.c.namespace_id)
        rows = (await self._s.execute(query.with_for_update() if for_update else query)).mappings().all()
        return [dict(r) for r in rows]

    async def rewrap_namespace(self, vault_id: str, namespace_id: str, kek_id: str, wrapped: bytes) -> None:
        await self._s.execute(update(replica_namespaces).where(
            replica_namespaces.c.vault_id == vault_id, replica_namespaces.c.namespace_id == namespace_id)
            .values(kek_id=kek_id, wrapped_id_key=wrapped))

    async def add_namespace(self, **row) -> None:
        """Two racing first transfers of one source vault end with one row (the other's insert does nothing)."""
        await self._s.execute(pg_insert(replica_namespaces).values(created_time=utcnow(), **row)
                              .on_conflict_do_nothing())

    # Staged manifests

    async def staged(self, transfer_id: str) -> list[dict]:
        rows = (await self._s.execute(select(replica_transfer_manifests).where(
            replica_transfer_manifests.c.transfer_id == transfer_id)
            .order_by(replica_transfer_manifests.c.source_backup_id))).mappings().all()
        return [dict(r) for r in rows]

    async def add_staged(self, **row) -> None:
        await self._s.execute(pg_insert(replica_transfer_manifests).values(**row).on_conflict_do_nothing())

    # The want-list

    async def add_wanted(self, transfer_id: str, sizes: dict[bytes, int]) -> None:
        items = sorted(sizes.items())
        for start in range(0, len(items), BATCH):
            await self._s.execute(pg_insert(replica_transfer_wanted).on_conflict_do_nothing(), [
                {"transfer_id": transfer_id, "digest": digest, "raw_size": raw}
                for digest, raw in items[start:start + BATCH]])

    async def wanted_page(self, transfer_id: str, after: bytes, limit: int) -> list[tuple[bytes, int]]:
        c = replica_transfer_wanted.c
        rows = (await self._s.execute(select(c.digest, c.raw_size).where(
            c.transfer_id == transfer_id, c.digest > after).order_by(c.digest).limit(limit))).all()
        return [(bytes(d), raw) for d, raw in rows]

    async def wanted_among(self, transfer_id: str, ids: Iterable[bytes]) -> dict[bytes, int]:
        c = replica_transfer_wanted.c
        ids = sorted(set(ids))
        if not ids:
            return {}
        rows = (await self._s.execute(select(c.digest, c.raw_size).where(
            c.transfer_id == transfer_id, ids_in(c.digest, ids)))).all()
        return {bytes(d): raw for d, raw in rows}

    async def drop_wanted(self, transfer_id: str, ids: Iterable[bytes]) -> None:
        c = replica_transfer_wanted.c
        ids = sorted(set(ids))
        for start in range(0, len(ids), BATCH):
            await self._s.execute(delete(replica_transfer_wanted).where(
                c.transfer_id == transfer_id, ids_in(c.digest, ids[start:start + BATCH])))

    async def forget_wanted(self, transfer_id: str) -> None:
        """A transfer that ends keeps neither its want-list nor its packs' list (GC judges its packs by the index)."""
        await self._s.execute(delete(replica_transfer_wanted).where(
            replica_transfer_wanted.c.transfer_id == transfer_id))
        await self._s.execute(delete(replica_transfer_packs).where(
            replica_transfer_packs.c.transfer_id == transfer_id))

    # Packs put by a transfer, recorded before their put (adoption on resume)

    async def add_pack(self, transfer_id: str, pack_id: bytes) -> None:
        await self._s.execute(pg_insert(replica_transfer_packs).values(
            transfer_id=transfer_id, pack_id=pack_id, created_time=utcnow()).on_conflict_do_nothing())

    async def packs(self, transfer_id: str) -> list[bytes]:
        c = replica_transfer_packs.c
        rows = (await self._s.execute(select(c.pack_id).where(c.transfer_id == transfer_id)
                                      .order_by(c.created_time))).scalars()
        return [bytes(r) for r in rows]

    async def wanted_all(self, transfer_id: str) -> dict[bytes, int]:
        c = replica_transfer_wanted.c
        rows = (await self._s.execute(select(c.digest, c.raw_size).where(c.transfer_id == transfer_id))).all()
        return {bytes(d): raw for d, raw in rows}

    # Dictionaries

    async def dictionaries(self, vault_id: str, namespace_id: str) -> set[bytes]:
        c = replica_dictionaries.c
        rows = (await self._s.execute(select(c.dictionary_id).where(
            c.vault_id == vault_id, c.namespace_id == namespace_id))).scalars()
        return {bytes(r) for r in rows}

    async def add_dictionary(self, vault_id: str, namespace_id: str, dictionary_id: bytes) -> None:
        await self._s.execute(pg_insert(replica_dictionaries).values(
            vault_id=vault_id, namespace_id=namespace_id, dictionary_id=dictionary_id, created_time=utcnow())
            .on_conflict_do_nothing())

    # Replicas

    async def parents(self, vault_id: str, namespace_id: str, resource_ids: Sequence[str]) -> list[dict]:
        """Committed replicas (available, with a manifest) of these resources in this namespace: possible parents."""
        c = backups.c
        rows = (await self._s.execute(select(
            c.backup_id, c.resource_id, c.source_backup_id, c.manifest_digest, c.manifest_id).where(
            c.vault_id == vault_id, c.namespace_id == namespace_id, c.resource_id.in_(list(resource_ids)),
            c.status == "available", c.manifest_id.is_not(None), c.manifest_kind == "disk", c.corrupt.is_(False))
            .order_by(c.protected_time.desc(), c.backup_id))).mappings().all()
        return [dict(r) for r in rows]

    async def oldest_open_start(self, vault_id: str) -> dt.datetime | None:
        c = replica_transfers.c
        return (await self._s.execute(select(func.min(c.started_time)).where(
            and_(c.vault_id == vault_id, c.state == "open")))).scalar_one()

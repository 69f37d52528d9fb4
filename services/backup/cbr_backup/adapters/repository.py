"""Reads and writes the inventory and the task log in the `backup` schema; returns domain objects."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_backup.adapters.tables import disks, file_systems, servers, tasks
from cbr_backup.domain.model import Disk, FileSystem, Server, Task
from cbr_backup.domain.rules import device_order
from cbr_common.db import utcnow


@dataclass(frozen=True)
class ProtectableFilter:
    project_id: str
    resource_id: str = ""
    name: str = ""      # substring
    status: str = ""
    server_id: str = ""


@dataclass(frozen=True)
class TaskFilter:
    project_id: str
    operation_type: str = ""
    status: str = ""
    vault_id: str = ""
    resource_id: str = ""
    start_time: dt.datetime | None = None  # created at or after
    end_time: dt.datetime | None = None    # created before


class InventoryRepository:
    """Disks, servers and file systems of the local provider."""

    def __init__(self, session: AsyncSession):
        self._s = session

    # Disks

    async def add_disk(self, disk: Disk) -> None:
        await self._s.execute(insert(disks).values(
            disk_id=disk.disk_id, project_id=disk.project_id, name=disk.name, size_bytes=disk.size_bytes,
            status=disk.status, server_id=disk.server_id or None, device=disk.device or None, path=disk.path,
            created_time=disk.created_time))

    async def get_disk(self, project_id: str, disk_id: str, for_update: bool = False,
                       for_share: bool = False) -> Disk | None:
        query = select(disks).where(disks.c.disk_id == disk_id, disks.c.project_id == project_id)
        if for_update or for_share:
            query = query.with_for_update(read=not for_update)
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else _disk(row)

    async def lock_disks(self, project_id: str, disk_ids: Sequence[str]) -> dict[str, Disk]:
        """The project's disks among `disk_ids`, locked in id order so two callers never deadlock."""
        rows = (await self._s.execute(
            select(disks).where(disks.c.disk_id.in_(disk_ids), disks.c.project_id == project_id)
            .order_by(disks.c.disk_id).with_for_update())).mappings().all()
        return {r["disk_id"]: _disk(r) for r in rows}

    async def list_disks(self, flt: ProtectableFilter, limit: int, offset: int) -> tuple[list[Disk], int]:
        where = [disks.c.project_id == flt.project_id]
        if flt.resource_id:
            where.append(disks.c.disk_id == flt.resource_id)
        if flt.name:
            where.append(disks.c.name.contains(flt.name, autoescape=True))
        if flt.status:
            where.append(disks.c.status == flt.status)
        if flt.server_id:
            where.append(disks.c.server_id == flt.server_id)
        count = (await self._s.execute(select(func.count()).select_from(disks).where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(select(disks).where(and_(*where))
                                      .order_by(disks.c.created_time, disks.c.disk_id)
                                      .limit(limit).offset(offset))).mappings().all()
        return [_disk(r) for r in rows], count

    async def set_disk_status(self, disk_id: str, status: str) -> None:
        await self._s.execute(update(disks).where(disks.c.disk_id == disk_id).values(status=status))

    async def set_disk_size(self, disk_id: str, size_bytes: int) -> None:
        await self._s.execute(update(disks).where(disks.c.disk_id == disk_id).values(size_bytes=size_bytes))

    async def delete_disk(self, disk_id: str) -> None:
        await self._s.execute(delete(disks).where(disks.c.disk_id == disk_id))

    # Servers

    async def add_server(self, server: Server) -> None:
        """Inserts the server and attaches its disks, in order, with the devices they carry."""
        await self._s.execute(insert(servers).values(server_id=server.server_id, project_id=server.project_id,
                                                     name=server.name, created_time=server.created_time))
        for disk in server.disks:
            await self._s.execute(update(disks).where(disks.c.disk_id == disk.disk_id).values(
                status="in-use", server_id=server.server_id, device=disk.device))

    async def get_server(self, project_id: str, server_id: str, for_update: bool = False,
                       for_share: bool = False) -> Server | None:
        query = select(servers).where(servers.c.server_id == server_id, servers.c.project_id == project_id)
        if for_update or for_share:
            query = query.with_for_update(read=not for_update)
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else (await self._load_servers([row]))[0]

    async def list_servers(self, flt: ProtectableFilter, limit: int, offset: int) -> tuple[list[Server], int]:
        if flt.status and flt.status != "available":
            return [], 0  # servers are always available
        where = [servers.c.project_id == flt.project_id]
        for wanted in {flt.resource_id, flt.server_id} - {""}:
            where.append(servers.c.server_id == wanted)
        if flt.name:
            where.append(servers.c.name.contains(flt.name, autoescape=True))
        count = (await self._s.execute(select(func.count()).select_from(servers).where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(select(servers).where(and_(*where))
                                      .order_by(servers.c.created_time, servers.c.server_id)
                                      .limit(limit).offset(offset))).mappings().all()
        return await self._load_servers(rows), count

    async def delete_server(self, server_id: str) -> None:
        """Detaches the server's disks (they become available) and deletes the server."""
        await self._s.execute(update(disks).where(disks.c.server_id == server_id).values(
            status="available", server_id=None, device=None))
        await self._s.execute(delete(servers).where(servers.c.server_id == server_id))

    async def _load_servers(self, rows) -> list[Server]:
        ids = [r["server_id"] for r in rows]
        attached: dict[str, list[Disk]] = {i: [] for i in ids}
        if ids:
            for r in (await self._s.execute(select(disks).where(disks.c.server_id.in_(ids)))).mappings():
                attached[r["server_id"]].append(_disk(r))
        return [Server(server_id=r["server_id"], project_id=r["project_id"], name=r["name"],
                       disks=sorted(attached[r["server_id"]], key=lambda d: device_order(d.device)),
                       created_time=r["created_time"]) for r in rows]

    # File systems

    async def add_file_system(self, fs: FileSystem) -> None:
        await self._s.execute(insert(file_systems).values(fs_id=fs.fs_id, project_id=fs.project_id, name=fs.name,
                                                          path=fs.path, created_time=fs.created_time))

    async def get_file_system(self, project_id: str, fs_id: str, for_update: bool = False,
                              for_share: bool = False) -> FileSystem | None:
        query = select(file_systems).where(file_systems.c.fs_id == fs_id, file_systems.c.project_id == project_id)
        if for_update or for_share:
            query = query.with_for_update(read=not for_update)
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else _file_system(row)

    async def list_file_systems(self, flt: ProtectableFilter, limit: int,
                                offset: int) -> tuple[list[FileSystem], int]:
        if (flt.status and flt.status != "available") or flt.server_id:
            return [], 0  # file systems are always available and never attached to a server
        where = [file_systems.c.project_id == flt.project_id]
        if flt.resource_id:
            where.append(file_systems.c.fs_id == flt.resource_id)
        if flt.name:
            where.append(file_systems.c.name.contains(flt.name, autoescape=True))
        count = (await self._s.execute(select(func.count()).select_from(file_systems)
                                       .where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(select(file_systems).where(and_(*where))
                                      .order_by(file_systems.c.created_time, file_systems.c.fs_id)
                                      .limit(limit).offset(offset))).mappings().all()
        return [_file_system(r) for r in rows], count

    async def delete_file_system(self, fs_id: str) -> None:
        await self._s.execute(delete(file_systems).where(file_systems.c.fs_id == fs_id))


_TASK_TEXT = ("vault_name", "resource_name", "error_code", "error_message")
_TASK_IDS = ("vault_id", "resource_id", "backup_id", "checkpoint_id", "policy_id")
_TASK_PLAIN = ("operation_type", "status", "progress", "bytes_done", "bytes_total", "created_time",
               "started_time", "ended_time", "updated_time", "attempts", "heartbeat_time")


class TaskRepository:
    """The operation log."""

    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, task: Task) -> bool:
        """Inserts the task; False if a task with its id exists already (the caller's retry)."""
        row = {f: getattr(task, f) for f in (*_TASK_TEXT, *_TASK_PLAIN)}
        row.update({f: getattr(task, f) or None for f in _TASK_IDS})
        row.update(task_id=task.task_id, project_id=task.project_id, extra_info=dict(task.extra_info),
                   params=dict(task.params), worker_id=task.worker_id or None)
        inserted = (await self._s.execute(pg_insert(tasks).values(**row).on_conflict_do_nothing(
            index_elements=[tasks.c.task_id]).returning(tasks.c.task_id))).first()
        return inserted is not None

    async def get(self, project_id: str, task_id: str, for_update: bool = False) -> Task | None:
        query = select(tasks).where(tasks.c.task_id == task_id, tasks.c.project_id == project_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else _task(row)

    async def list(self, flt: TaskFilter, limit: int, offset: int) -> tuple[list[Task], int]:
        where = [tasks.c.project_id == flt.project_id]
        for column, value in ((tasks.c.operation_type, flt.operation_type), (tasks.c.status, flt.status),
                              (tasks.c.vault_id, flt.vault_id), (tasks.c.resource_id, flt.resource_id)):
            if value:
                where.append(column == value)
        if flt.start_time is not None:
            where.append(tasks.c.created_time >= flt.start_time)
        if flt.end_time is not None:
            where.append(tasks.c.created_time < flt.end_time)
        count = (await self._s.execute(select(func.count()).select_from(tasks).where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(select(tasks).where(and_(*where))
                                      .order_by(tasks.c.created_time.desc(), tasks.c.task_id)
                                      .limit(limit).offset(offset))).mappings().all()
        return [_task(r) for r in rows], count

    async def open_for_vault(self, vault_id: str) -> list[Task]:
        """The vault's tasks that are waiting or running, locked."""
        rows = (await self._s.execute(select(tasks).where(tasks.c.vault_id == vault_id,
                                                          tasks.c.status.in_(("waiting", "running")))
                                      .order_by(tasks.c.task_id).with_for_update())).mappings().all()
        return [_task(r) for r in rows]

    async def update_fields(self, task_id: str, **values) -> None:
        values.setdefault("updated_time", utcnow())
        await self._s.execute(update(tasks).where(tasks.c.task_id == task_id).values(**values))


def _disk(row) -> Disk:
    return Disk(disk_id=row["disk_id"], project_id=row["project_id"], name=row["name"],
                size_bytes=row["size_bytes"], path=row["path"], status=row["status"],
                server_id=row["server_id"] or "", device=row["device"] or "", created_time=row["created_time"])


def _file_system(row) -> FileSystem:
    return FileSystem(fs_id=row["fs_id"], project_id=row["project_id"], name=row["name"], path=row["path"],
                      created_time=row["created_time"])


def _task(row) -> Task:
    return Task(task_id=row["task_id"], project_id=row["project_id"], extra_info=dict(row["extra_info"] or {}),
                params=dict(row["params"] or {}), worker_id=row["worker_id"] or "",
                **{f: row[f] for f in (*_TASK_TEXT, *_TASK_PLAIN)},
                **{f: row[f] or "" for f in _TASK_IDS})

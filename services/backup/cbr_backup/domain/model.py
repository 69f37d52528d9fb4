"""Protectable resources (disks, servers, file systems) and tasks, as plain dataclasses."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

OBJECT_TYPES = ("server", "disk", "turbo")
RESOURCE_TYPES = {"server": "OS::Nova::Server", "disk": "OS::Cinder::Volume", "turbo": "OS::Sfs::Turbo"}
DISK_STATUSES = ("available", "in-use", "restoring", "error")  # restoring: written in place, not whole yet
PROTECTABLE_STATUSES = DISK_STATUSES  # servers and file systems are always "available" for now

OPERATION_TYPES = ("backup", "restore", "delete", "vault_delete", "remove_resource", "replication", "verify", "gc")
TASK_STATUSES = ("waiting", "running", "success", "failed", "timeout", "skipped", "cancelled")
FINAL_TASK_STATUSES = frozenset({"success", "failed", "timeout", "skipped", "cancelled"})


@dataclass
class Disk:
    disk_id: str
    project_id: str
    name: str
    size_bytes: int
    path: str
    status: str = "available"
    server_id: str = ""
    device: str = ""          # "vda", "vdb", ... while attached
    created_time: dt.datetime | None = None


@dataclass
class Server:
    """A named group of pool disks, in attachment order."""
    server_id: str
    project_id: str
    name: str
    disks: list[Disk] = field(default_factory=list)
    created_time: dt.datetime | None = None

    @property
    def size_bytes(self) -> int:
        return sum(d.size_bytes for d in self.disks)


@dataclass
class FileSystem:
    fs_id: str
    project_id: str
    name: str
    path: str
    created_time: dt.datetime | None = None


@dataclass(frozen=True)
class Protectable:
    """One resource as ProtectableService shows it; fields not meaningful for its type stay empty."""
    resource_id: str
    project_id: str
    name: str
    type: str
    status: str
    size_bytes: int
    path: str = ""
    server_id: str = ""
    disks: tuple[Disk, ...] = ()
    created_time: dt.datetime | None = None

    @property
    def resource_type(self) -> str:
        return RESOURCE_TYPES[self.type]


def disk_protectable(disk: Disk) -> Protectable:
    return Protectable(resource_id=disk.disk_id, project_id=disk.project_id, name=disk.name, type="disk",
                       status=disk.status, size_bytes=disk.size_bytes, path=disk.path, server_id=disk.server_id,
                       created_time=disk.created_time)


def server_protectable(server: Server) -> Protectable:
    return Protectable(resource_id=server.server_id, project_id=server.project_id, name=server.name, type="server",
                       status="available", size_bytes=server.size_bytes, disks=tuple(server.disks),
                       created_time=server.created_time)


def file_system_protectable(fs: FileSystem, used_bytes: int) -> Protectable:
    return Protectable(resource_id=fs.fs_id, project_id=fs.project_id, name=fs.name, type="turbo",
                       status="available", size_bytes=used_bytes, path=fs.path, created_time=fs.created_time)


@dataclass
class Task:
    """One entry of the operation log."""
    task_id: str
    project_id: str
    operation_type: str
    status: str = "waiting"
    progress: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    vault_id: str = ""
    vault_name: str = ""
    resource_id: str = ""
    resource_name: str = ""
    backup_id: str = ""
    checkpoint_id: str = ""
    policy_id: str = ""
    error_code: str = ""
    error_message: str = ""
    extra_info: dict[str, str] = field(default_factory=dict)
    created_time: dt.datetime | None = None
    started_time: dt.datetime | None = None
    ended_time: dt.datetime | None = None
    updated_time: dt.datetime | None = None
    params: dict = field(default_factory=dict)  # what the job is to do (targets, grace, ...); never shown
    attempts: int = 0                           # deliveries a worker has started
    worker_id: str = ""
    heartbeat_time: dt.datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_TASK_STATUSES

    def watch_key(self) -> tuple:
        """What a watcher compares between polls: a change in any of these is news."""
        return (self.updated_time, self.status, self.progress, self.bytes_done, self.bytes_total)

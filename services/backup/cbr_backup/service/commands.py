"""Requests to the backup service, as plain dataclasses (already converted from protobuf, not yet checked)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ListProtectables:
    project_id: str
    type: str
    limit: int = 0
    offset: int = 0
    resource_id: str = ""
    name: str = ""
    status: str = ""
    server_id: str = ""


@dataclass(frozen=True)
class ListTasks:
    project_id: str
    limit: int = 0
    offset: int = 0
    operation_type: str = ""
    status: str = ""
    vault_id: str = ""
    resource_id: str = ""
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None

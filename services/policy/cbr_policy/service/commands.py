"""Requests to the policy service, as plain dataclasses (already converted from protobuf, not yet checked)."""
from __future__ import annotations

from dataclasses import dataclass

from cbr_policy.domain.model import OperationDefinition, Trigger


@dataclass(frozen=True)
class CreatePolicy:
    project_id: str
    name: str
    operation_type: str
    trigger: Trigger
    operation_definition: OperationDefinition
    enabled: bool = True


@dataclass(frozen=True)
class UpdatePolicy:
    """None means: leave unchanged. A trigger or operation definition given replaces the old one whole; the
    operation type never changes (the request has no field for it)."""
    project_id: str
    policy_id: str
    name: str | None = None
    enabled: bool | None = None
    trigger: Trigger | None = None
    operation_definition: OperationDefinition | None = None


@dataclass(frozen=True)
class ListPolicies:
    project_id: str
    limit: int = 0
    offset: int = 0
    operation_type: str = ""
    vault_id: str = ""

"""Protobuf messages <-> policy domain objects and commands."""
from __future__ import annotations

import datetime as dt

from cbr.policy.v1 import policy_pb2
from cbr_common.proto_enums import enum_name, enum_value
from cbr_policy.domain import errors
from cbr_policy.domain.model import UNSET, OperationDefinition, Policy, Trigger
from cbr_policy.domain.next_run import next_run_time
from cbr_policy.domain.retention import Decision, RetentionRule
from cbr_policy.service.commands import CreatePolicy, ListPolicies, UpdatePolicy
from cbr_policy.service.ticks import Tick

# Optional counts: unset in the message is CBR's -1 in the domain, and -1 goes out as unset.
OPTIONAL_COUNTS = ("max_backups", "retention_duration_days", "full_backup_interval")
PLAIN_FIELDS = ("day_backups", "week_backups", "month_backups", "year_backups", "timezone", "destination_region",
                "destination_project_id")


def operation_type(value: int) -> str:
    return enum_name(policy_pb2.OperationType, value)


def time_in(stamp, what: str) -> dt.datetime:
    try:
        return stamp.ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise errors.InvalidTimeRangeError(f"{what} is not a valid time") from None


def trigger_in(msg: policy_pb2.PolicyTrigger) -> Trigger:
    start = time_in(msg.start_time, "trigger start_time") if msg.HasField("start_time") else None
    return Trigger(patterns=tuple(msg.patterns), start_time=start)


def definition_in(msg: policy_pb2.OperationDefinition) -> OperationDefinition:
    counts = {name: getattr(msg, name) if msg.HasField(name) else UNSET for name in OPTIONAL_COUNTS}
    return OperationDefinition(**counts, **{name: getattr(msg, name) for name in PLAIN_FIELDS})


def create_policy_in(project_id: str, req: policy_pb2.CreatePolicyRequest) -> CreatePolicy:
    return CreatePolicy(project_id=project_id, name=req.name, operation_type=operation_type(req.operation_type),
                        trigger=trigger_in(req.trigger), operation_definition=definition_in(req.operation_definition),
                        enabled=req.enabled if req.HasField("enabled") else True)


def update_policy_in(project_id: str, req: policy_pb2.UpdatePolicyRequest) -> UpdatePolicy:
    return UpdatePolicy(
        project_id=project_id, policy_id=req.policy_id,
        name=req.name if req.HasField("name") else None,
        enabled=req.enabled if req.HasField("enabled") else None,
        trigger=trigger_in(req.trigger) if req.HasField("trigger") else None,
        operation_definition=definition_in(req.operation_definition) if req.HasField("operation_definition")
        else None)


def list_policies_in(project_id: str, req: policy_pb2.ListPoliciesRequest) -> ListPolicies:
    return ListPolicies(project_id=project_id, limit=req.page.limit, offset=req.page.offset,
                        operation_type=operation_type(req.operation_type), vault_id=req.vault_id)


def definition_out(definition: OperationDefinition) -> policy_pb2.OperationDefinition:
    msg = policy_pb2.OperationDefinition(**{name: getattr(definition, name) for name in PLAIN_FIELDS})
    for name in OPTIONAL_COUNTS:
        if getattr(definition, name) != UNSET:
            setattr(msg, name, getattr(definition, name))
    return msg


def policy_out(policy: Policy, now: dt.datetime | None = None) -> policy_pb2.Policy:
    """`now` (the scheduler's clock) fills next_run_time; without it the field stays unset."""
    msg = policy_pb2.Policy(
        policy_id=policy.policy_id, project_id=policy.project_id, name=policy.name,
        operation_type=enum_value(policy_pb2.OperationType, policy.operation_type), enabled=policy.enabled,
        trigger=policy_pb2.PolicyTrigger(patterns=list(policy.trigger.patterns)),
        operation_definition=definition_out(policy.operation_definition),
        associated_vaults=[policy_pb2.AssociatedVault(vault_id=v.vault_id, destination_vault_id=v.destination_vault_id)
                           for v in policy.associated_vaults])
    if policy.trigger.start_time:
        msg.trigger.start_time.FromDatetime(policy.trigger.start_time)
    msg.created_time.FromDatetime(policy.created_time)
    msg.updated_time.FromDatetime(policy.updated_time)
    upcoming = next_run_time(policy, now) if now is not None else None
    if upcoming is not None:
        msg.next_run_time.FromDatetime(upcoming)
    return msg


def rule_in(msg: policy_pb2.OperationDefinition) -> RetentionRule:
    d = definition_in(msg)
    return RetentionRule(max_backups=d.max_backups, retention_duration_days=d.retention_duration_days,
                         day_backups=d.day_backups, week_backups=d.week_backups, month_backups=d.month_backups,
                         year_backups=d.year_backups, timezone=d.timezone)


def decision_out(d: Decision) -> policy_pb2.RetentionDecision:
    msg = policy_pb2.RetentionDecision(backup_id=d.backup_id, keep=d.keep, reasons=list(d.reasons))
    msg.created_time.FromDatetime(d.created_time)
    return msg


TICK_STATUS = {"fired": policy_pb2.TICK_STATUS_FIRED, "skipped": policy_pb2.TICK_STATUS_SKIPPED,
               "failed": policy_pb2.TICK_STATUS_FAILED, "firing": policy_pb2.TICK_STATUS_FIRING}


def tick_out(t: Tick) -> policy_pb2.Tick:
    msg = policy_pb2.Tick(tick_id=t.tick_id, policy_id=t.policy_id, vault_id=t.vault_id,
                          status=TICK_STATUS[t.status], reason=t.reason, checkpoint_id=t.checkpoint_id)
    msg.scheduled_time.FromDatetime(t.scheduled_time)
    if t.fired_time is not None:
        msg.fired_time.FromDatetime(t.fired_time)
    return msg

"""PolicyService over gRPC: convert, call the use case, convert back. Errors leave through cbr_common's table."""
from __future__ import annotations

from typing import Callable

from cbr.policy.v1 import policy_pb2, policy_pb2_grpc
from cbr_common.auth import current_principal
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.domain.rules import check_id
from cbr_policy.grpc_api import convert
from cbr_policy.adapters.backups import BackupPort
from cbr_policy.service import policies, retention_runs, ticks
from cbr_policy.service.clock import Clock


def _project() -> str:
    return current_principal().project_id


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, make_uow: Callable[[], PolicyUnitOfWork], region: str, backups: BackupPort, clock: Clock):
        self._uow = make_uow
        self._region = region  # this deployment's: replication policies must name another
        self._backups = backups
        self._clock = clock

    async def CreatePolicy(self, request, context):
        policy = await policies.create_policy(convert.create_policy_in(_project(), request), self._uow(),
                                              self._region)
        return policy_pb2.CreatePolicyResponse(policy=convert.policy_out(policy, self._clock.now()))

    async def GetPolicy(self, request, context):
        policy = await policies.get_policy(_project(), request.policy_id, self._uow())
        return policy_pb2.GetPolicyResponse(policy=convert.policy_out(policy, self._clock.now()))

    async def ListPolicies(self, request, context):
        found, count = await policies.list_policies(convert.list_policies_in(_project(), request), self._uow())
        now = self._clock.now()
        return policy_pb2.ListPoliciesResponse(policies=[convert.policy_out(p, now) for p in found], count=count)

    async def UpdatePolicy(self, request, context):
        policy = await policies.update_policy(convert.update_policy_in(_project(), request), self._uow(),
                                              self._region)
        return policy_pb2.UpdatePolicyResponse(policy=convert.policy_out(policy, self._clock.now()))

    async def DeletePolicy(self, request, context):
        await policies.delete_policy(_project(), request.policy_id, self._uow())
        return policy_pb2.DeletePolicyResponse()

    async def PreviewRetention(self, request, context):
        rule = policy_id = None
        which = request.WhichOneof("rule")
        if which == "operation_definition":
            rule = convert.rule_in(request.operation_definition)
        elif which == "policy_id":
            policy_id = check_id(request.policy_id, "policy_id")
        when = convert.time_in(request.evaluation_time, "evaluation_time") if request.HasField("evaluation_time") \
            else None
        decisions = await retention_runs.preview(
            _project(), check_id(request.vault_id, "vault_id"), policy_id or "", rule, when, self._uow,
            self._backups, self._clock)
        return policy_pb2.PreviewRetentionResponse(
            decisions=[convert.decision_out(d) for d in decisions], keep_count=sum(d.keep for d in decisions),
            delete_count=sum(not d.keep for d in decisions))

    async def ListTicks(self, request, context):
        start = convert.time_in(request.start_time, "start_time") if request.HasField("start_time") else None
        end = convert.time_in(request.end_time, "end_time") if request.HasField("end_time") else None
        found, count = await ticks.list_ticks(_project(), request.policy_id, request.vault_id, start, end,
                                              request.page.limit, request.page.offset, self._uow)
        return policy_pb2.ListTicksResponse(ticks=[convert.tick_out(t) for t in found], count=count)

"""The replication policy's retention rule, from the policy service (GetPolicy with a service token): it travels
with each auto replica and the destination's policy service applies it there."""
from __future__ import annotations

from typing import Protocol

import grpc

from cbr.policy.v1 import policy_pb2, policy_pb2_grpc
from cbr.replication.v1 import replication_pb2
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.settings import Settings


class PolicyPort(Protocol):
    async def replica_retention(self, project_id: str, policy_id: str) -> bytes | None: ...


def retention_of(policy: policy_pb2.Policy) -> replication_pb2.ReplicaRetention:
    rule = policy.operation_definition
    retention = replication_pb2.ReplicaRetention(
        policy_id=policy.policy_id, day_backups=rule.day_backups, week_backups=rule.week_backups,
        month_backups=rule.month_backups, year_backups=rule.year_backups, timezone=rule.timezone)
    if rule.HasField("max_backups"):
        retention.max_backups = rule.max_backups
    if rule.HasField("retention_duration_days"):
        retention.retention_duration_days = rule.retention_duration_days
    return retention


class GrpcPolicies:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._channel = open_channel(settings, settings.peer("policy"))
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)

    async def replica_retention(self, project_id: str, policy_id: str) -> bytes | None:
        """The serialized ReplicaRetention of a replication policy; None when the policy is gone or is not one."""
        try:
            reply = await self._stub.GetPolicy(policy_pb2.GetPolicyRequest(policy_id=policy_id),
                                               metadata=service_metadata(self._settings, project_id),
                                               timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            raise_if_unavailable(error, "policy")
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        if reply.policy.operation_type != policy_pb2.OPERATION_TYPE_REPLICATION:
            return None
        return retention_of(reply.policy).SerializeToString()

    async def close(self) -> None:
        await self._channel.close()

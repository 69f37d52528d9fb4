"""Asks the policy service for a policy the vault service has not yet heard of through its events (a policy
created a moment ago), so that associating it right after creating it works."""
from __future__ import annotations

from typing import Protocol

import grpc

from cbr.policy.v1 import policy_pb2, policy_pb2_grpc
from cbr_common.peers import open_channel, raise_if_unavailable, service_metadata
from cbr_common.proto_enums import enum_name
from cbr_common.settings import Settings
from cbr_vault.domain.model import PolicyRef


class PolicyDirectory(Protocol):
    async def get(self, project_id: str, policy_id: str) -> PolicyRef | None: ...


class GrpcPolicyDirectory:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._channel = open_channel(settings, settings.peer("policy"))
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)

    async def get(self, project_id: str, policy_id: str) -> PolicyRef | None:
        try:
            reply = await self._stub.GetPolicy(policy_pb2.GetPolicyRequest(policy_id=policy_id),
                                               metadata=service_metadata(self._settings, project_id),
                                               timeout=self._settings.peer_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise_if_unavailable(error, "policy")
            raise RuntimeError(f"policy lookup failed: {error.code().name}") from error
        p = reply.policy
        return PolicyRef(policy_id=p.policy_id, project_id=p.project_id,
                         operation_type=enum_name(policy_pb2.OperationType, p.operation_type), name=p.name,
                         enabled=p.enabled)

    async def close(self) -> None:
        await self._channel.close()

"""Wires the policy service. Its RPCs answer UNIMPLEMENTED until the policy issue fills them in."""
from __future__ import annotations

from cbr.policy.v1 import policy_pb2_grpc
from cbr_common.runtime import ServiceRuntime, open_runtime, serve
from cbr_common.server import ServiceBinding
from cbr_common.settings import Settings
from cbr_policy.adapters.tables import metadata


async def start(settings: Settings) -> ServiceRuntime:
    runtime = await open_runtime(settings, metadata)
    return await serve(runtime, [ServiceBinding(policy_pb2_grpc.add_PolicyServiceServicer_to_server,
                                                policy_pb2_grpc.PolicyServiceServicer(),
                                                "cbr.policy.v1.PolicyService")])

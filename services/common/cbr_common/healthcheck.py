"""`python -m cbr_common.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC health check says SERVING.

With CBR_TLS_CA set it checks over TLS, presenting CBR_TLS_CERT / CBR_TLS_KEY when the server wants mTLS.
"""
from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(address: str, service: str = "", timeout: float = 3.0,
               credentials: grpc.ChannelCredentials | None = None) -> bool:
    channel = (grpc.secure_channel(address, credentials) if credentials
               else grpc.insecure_channel(address))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def credentials_from_env(env=os.environ) -> grpc.ChannelCredentials | None:
    if not env.get("CBR_TLS_CA"):
        return None

    def read(name: str) -> bytes | None:
        return open(env[name], "rb").read() if env.get(name) else None
    return grpc.ssl_channel_credentials(read("CBR_TLS_CA"), read("CBR_TLS_KEY"), read("CBR_TLS_CERT"))


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m cbr_common.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    serving = is_serving(argv[1], argv[2] if len(argv) == 3 else "", credentials=credentials_from_env())
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

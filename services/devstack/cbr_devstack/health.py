"""Waiting for gRPC services to answer SERVING on the standard health check (grpc.health.v1, service "")."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class NotServingError(RuntimeError):
    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} {reason}")
        self.name = name


def is_serving(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                   timeout=timeout)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def wait_serving(addresses: Mapping[str, str], timeout: float, alive: Callable[[str], bool]) -> None:
    """Returns once every named address serves; raises NotServingError for the first that died or ran out of time."""
    deadline = time.monotonic() + timeout
    waiting = dict(addresses)
    while waiting:
        for name, address in list(waiting.items()):
            if is_serving(address):
                del waiting[name]
            elif not alive(name):
                raise NotServingError(name, "exited before serving")
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise NotServingError(next(iter(waiting)), f"did not answer SERVING within {timeout:.0f}s")
        time.sleep(0.2)

"""Client channels to CBR services that may run as several replicas: which replica a call goes to, and which calls
are tried again on another replica when the one they met went away.

One address setting (CBR_<SERVICE>_ADDR, or the CLI's) may name:
- one host:port: gRPC's DNS resolver; every A record of the name is a replica (compose's `deploy.replicas`);
- several, comma-separated: the replicas themselves (IP literals as they are, host names resolved once here);
- a gRPC target with its scheme (dns:///name:port, ipv4:a:p,b:p, unix:/path): taken as it is.
Calls are spread over the ready replicas (round_robin); a replica that died leaves the rotation as soon as its
connection breaks.

Retried on UNAVAILABLE (the replica died or shut down under the call), within the call's own deadline:
- reads (Get*, List*, Watch*, Preview*, Check*): by gRPC itself, from the service config below;
- writes whose request carries a request_id the service dedupes (CreateCheckpoint, ReplicateBackup,
  ReplicateCheckpoint): by KeyedRetry below, only when request_id is set, since gRPC's policy cannot look at it.
Any other write is never retried here (only gRPC's transparent retry of calls that never reached a server): its
caller sees UNAVAILABLE and decides.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import Any, Iterable, Sequence

import grpc

from cbr_common.settings import SettingsError

READ_PREFIXES = ("Get", "List", "Watch", "Preview", "Check")
MAX_ATTEMPTS = 4            # the first try and three more, each on whichever replica is ready
INITIAL_BACKOFF = 0.05      # seconds; doubled per attempt (gRPC adds jitter to its own)
MAX_BACKOFF = 1.0
# For service-to-service channels: a peer whose machine vanished (no RST) is noticed by keepalive pings within
# about 25 s; CBR's services permit a ping every 10 s without calls (cbr_common.server.server_options). Not for the
# CLI, whose calls are short and which may reach CBR through a proxy with a stricter ping policy.
KEEPALIVE_OPTIONS = (("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 5_000),
                     ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0))
# A replica that comes back (restarted, rescheduled) rejoins the rotation within this (gRPC's default: 120 s).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 10_000))


class AddressError(SettingsError):
    """An address setting that names no usable replica."""


def is_read(method: str) -> bool:
    return method.startswith(READ_PREFIXES)


def _proto_services() -> list[Any]:
    """Every service descriptor of the contracts a client of CBR calls (the generated modules)."""
    from cbr.backup.v1 import backup_pb2, protectable_pb2, task_pb2
    from cbr.policy.v1 import policy_pb2
    from cbr.replication.v1 import replication_pb2
    from cbr.vault.v1 import vault_pb2
    return [service for module in (vault_pb2, backup_pb2, protectable_pb2, task_pb2, policy_pb2, replication_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()]


def retry_classes(services: Iterable[Any] | None = None) -> tuple[dict[str, list[str]], frozenset[str]]:
    """(reads: service full name -> its read methods, keyed: "/<service>/<method>" of writes with a request_id)."""
    reads: dict[str, list[str]] = {}
    keyed: set[str] = set()
    for service in _proto_services() if services is None else services:
        for method in service.methods:
            if is_read(method.name):
                reads.setdefault(service.full_name, []).append(method.name)
            elif "request_id" in method.input_type.fields_by_name:
                keyed.add(f"/{service.full_name}/{method.name}")
    return reads, frozenset(keyed)


def service_config(reads: dict[str, list[str]]) -> str:
    """gRPC's service config: round_robin over the replicas, reads retried on UNAVAILABLE."""
    names = [{"service": service, "method": method} for service, methods in sorted(reads.items())
             for method in methods]
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": names, "retryPolicy": {
            "maxAttempts": MAX_ATTEMPTS, "initialBackoff": f"{INITIAL_BACKOFF}s", "maxBackoff": f"{MAX_BACKOFF}s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}],
    })


class KeyedRetry(grpc.aio.UnaryUnaryClientInterceptor):
    """Tries a write again on UNAVAILABLE when its request carries a request_id: the service returns what the
    first attempt made (if it made anything), so the side effect happens once however often it is sent."""

    def __init__(self, keyed: frozenset[str]):
        self._keyed = keyed

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        if method not in self._keyed or not getattr(request, "request_id", ""):
            return await continuation(client_call_details, request)
        timeout = client_call_details.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        details, backoff = client_call_details, INITIAL_BACKOFF
        for attempt in range(1, MAX_ATTEMPTS + 1):
            call = await continuation(details, request)
            if await call.code() != grpc.StatusCode.UNAVAILABLE or attempt == MAX_ATTEMPTS:
                return call
            if deadline is not None and deadline - time.monotonic() <= backoff:
                return call  # no time left for another attempt: the caller sees this one's UNAVAILABLE
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            if deadline is not None:
                details = details._replace(timeout=deadline - time.monotonic())
        return call  # not reached: the loop returns on its last attempt


_classes: tuple[dict[str, list[str]], frozenset[str]] | None = None


def _policy() -> tuple[str, frozenset[str]]:
    global _classes
    if _classes is None:
        _classes = retry_classes()
    return service_config(_classes[0]), _classes[1]


def _split_host_port(entry: str) -> tuple[str, str]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AddressError(f"{entry!r} is not host:port")
    return host.strip("[]"), port


def target(address: str, resolve=socket.getaddrinfo) -> tuple[str, str | None]:
    """The gRPC target for an address setting, and for a list the authority TLS checks: the first entry's (every
    replica presents the service's certificate)."""
    address = address.strip()
    if not address:
        raise AddressError("empty address")
    if "://" in address or address.startswith(("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")):
        return address, None
    entries = [entry.strip() for entry in address.split(",") if entry.strip()]
    if len(entries) == 1:
        return entries[0], None
    v4, v6, names = [], [], []
    for entry in entries:
        host, port = _split_host_port(entry)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            names.append((host, port))
            continue
        (v4 if ip.version == 4 else v6).append(f"{host}:{port}" if ip.version == 4 else f"[{host}]:{port}")
    if v6 and (v4 or names):
        raise AddressError(f"{address!r} mixes IPv6 literals with other addresses; list IPv6 replicas alone")
    host, port = _split_host_port(entries[0])
    authority = f"[{host}]:{port}" if v6 else f"{host}:{port}"
    if v6:
        return "ipv6:" + ",".join(v6), authority
    for host, port in names:
        try:
            found = {info[4][0] for info in resolve(host, int(port), socket.AF_INET, socket.SOCK_STREAM)}
        except OSError as exc:
            raise AddressError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise AddressError(f"{host} has no IPv4 address")
        v4 += [f"{ip}:{port}" for ip in sorted(found)]
    return "ipv4:" + ",".join(dict.fromkeys(v4)), authority


def open_channel(address: str, *, credentials: grpc.ChannelCredentials | None = None,
                 options: Sequence[tuple[str, Any]] = (), keepalive: bool = False) -> grpc.aio.Channel:
    """A channel over every replica `address` names, balanced, with the retries above."""
    config, keyed = _policy()
    tgt, authority = target(address)
    options = [*options, *(KEEPALIVE_OPTIONS if keepalive else ()), *RECONNECT_OPTIONS, ("grpc.enable_retries", 1),
               ("grpc.service_config", config)]
    if authority is not None:
        options.append(("grpc.default_authority", authority))
        if credentials is not None:  # checked against the first entry, whichever replica answers
            options.append(("grpc.ssl_target_name_override", authority.rpartition(":")[0].strip("[]")))
    interceptors = [KeyedRetry(keyed)]
    if credentials is None:
        return grpc.aio.insecure_channel(tgt, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(tgt, credentials, options=options, interceptors=interceptors)

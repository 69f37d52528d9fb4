"""Service-to-service calls: channels to peers (TLS when configured) and short-lived `service` tokens."""
from __future__ import annotations

import time

import grpc

from cbr_common import channels
from cbr_common.auth import ROLE_SERVICE, issue_token
from cbr_common.errors import UnavailableError
from cbr_common.settings import Settings

SERVICE_TOKEN_TTL = 300


def open_channel(settings: Settings, address: str) -> grpc.aio.Channel:
    """A channel to a peer service; `address` may name several replicas (cbr_common.channels)."""
    options = [("grpc.max_receive_message_length", settings.max_message_bytes),
               ("grpc.max_send_message_length", settings.max_message_bytes)]
    if settings.tls_ca:
        with open(settings.tls_ca, "rb") as f:
            root = f.read()
        cert_chain = key = None
        if settings.tls_cert and settings.tls_key:  # present our own certificate for mutual TLS
            with open(settings.tls_cert, "rb") as f:
                cert_chain = f.read()
            with open(settings.tls_key, "rb") as f:
                key = f.read()
        credentials = grpc.ssl_channel_credentials(root, key, cert_chain)
        return channels.open_channel(address, credentials=credentials, options=options, keepalive=True)
    return channels.open_channel(address, options=options, keepalive=True)


_tokens: dict[tuple[str, str, str], tuple[float, tuple[tuple[str, str], ...]]] = {}


def service_metadata(settings: Settings, project_id: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a call made on behalf of `project_id` by this service. A token is reused for the first half
    of its life (signing one per call was a visible share of the scheduler's time per tick)."""
    key = (settings.jwt_secret, settings.service, project_id)
    now = time.time()
    cached = _tokens.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    token = issue_token(settings.jwt_secret, project_id=project_id, subject=f"service:{settings.service}",
                        roles=[ROLE_SERVICE], ttl_seconds=SERVICE_TOKEN_TTL)
    if len(_tokens) > 10_000:
        _tokens.clear()
    metadata = (("authorization", f"Bearer {token}"),)
    _tokens[key] = (now + SERVICE_TOKEN_TTL / 2, metadata)
    return metadata


def raise_if_unavailable(error: grpc.aio.AioRpcError, peer: str) -> None:
    """A peer that is down or too slow is the caller's UNAVAILABLE, never its INTERNAL."""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        raise UnavailableError(f"{peer} service unavailable, try again") from error

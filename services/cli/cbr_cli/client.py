"""Channels to the CBR services (TLS when configured) and stubs whose calls carry the token and a deadline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
from cbr.policy.v1 import policy_pb2_grpc
from cbr.replication.v1 import replication_pb2_grpc
from cbr.vault.v1 import vault_pb2_grpc
from cbr_common import channels
from cbr_cli.config import Config, ConfigError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class AuthedStub:
    """A generated stub whose calls default to the caller's metadata and the configured deadline."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], timeout: float | None):
        self._stub, self._metadata, self._timeout = stub, metadata, timeout

    def __getattr__(self, method: str):
        call = getattr(self._stub, method)

        def invoke(request, **kwargs):
            kwargs.setdefault("metadata", self._metadata)
            kwargs.setdefault("timeout", self._timeout)
            return call(request, **kwargs)
        return invoke


class CbrClient:
    """One lazily opened channel per service address; `async with` closes them."""

    def __init__(self, config: Config):
        self._config = config
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def timeout(self) -> float:
        return self._config.timeout

    async def __aenter__(self) -> "CbrClient":
        return self

    async def __aexit__(self, *exc) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    @property
    def vaults(self) -> AuthedStub:
        return self._stub("vault", vault_pb2_grpc.VaultServiceStub)

    @property
    def protectables(self) -> AuthedStub:
        return self._stub("backup", protectable_pb2_grpc.ProtectableServiceStub)

    @property
    def backups(self) -> AuthedStub:
        return self._stub("backup", backup_pb2_grpc.BackupServiceStub)

    @property
    def tasks(self) -> AuthedStub:
        return self._stub("backup", task_pb2_grpc.TaskServiceStub)

    @property
    def policies(self) -> AuthedStub:
        return self._stub("policy", policy_pb2_grpc.PolicyServiceStub)

    @property
    def replication(self) -> AuthedStub:
        return self._stub("replication", replication_pb2_grpc.ReplicationServiceStub)

    def _stub(self, service: str, stub_class) -> AuthedStub:
        return AuthedStub(stub_class(self._channel(service)), self._metadata(), self._config.timeout)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        # No token means no header: the service answers UNAUTHENTICATED, which says more than a local guess.
        return (("authorization", f"Bearer {self._config.token}"),) if self._config.token else ()

    def _channel(self, service: str) -> grpc.aio.Channel:
        address = self._config.address(service)
        if address not in self._channels:
            self._channels[address] = open_channel(self._config, address)
        return self._channels[address]


def open_channel(config: Config, address: str) -> grpc.aio.Channel:
    """`address` may name several replicas, comma-separated: calls are balanced over them and reads (and writes
    with a request_id) retried on another one (cbr_common.channels)."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    credentials = None
    if config.tls_ca:
        root = _read(config.tls_ca, "CBR_TLS_CA")
        key = _read(config.tls_key, "CBR_TLS_KEY") if config.tls_key else None
        chain = _read(config.tls_cert, "CBR_TLS_CERT") if config.tls_cert else None
        credentials = grpc.ssl_channel_credentials(root, key, chain)
    try:
        return channels.open_channel(address, credentials=credentials, options=options)
    except channels.AddressError as exc:
        raise ConfigError(f"bad address {address!r}: {exc}") from None


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} file {path}: {exc.strerror}") from None

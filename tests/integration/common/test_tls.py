"""TLS and mutual TLS are a settings switch: a server with a certificate, clients with and without theirs."""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cbr.policy.v1 import policy_pb2_grpc
from cbr_common.healthcheck import credentials_from_env, is_serving
from cbr_common.peers import open_channel
from cbr_common.server import ServiceBinding, start_server
from cbr_common.settings import Settings


def _issue(name: str, issuer_key, issuer_name, ca: bool, path: Path) -> tuple[Path, Path, object, object]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = path / f"{name}.crt", path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, key, subject


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, _, ca_key, ca_name = _issue("ca", None, None, True, folder)
    server_cert, server_key, _, _ = _issue("server", ca_key, ca_name, False, folder)
    client_cert, client_key, _, _ = _issue("client", ca_key, ca_name, False, folder)
    return {"ca": str(ca_cert), "server_cert": str(server_cert), "server_key": str(server_key),
            "client_cert": str(client_cert), "client_key": str(client_key)}


def settings(**tls) -> Settings:
    return Settings(service="policy", database_url="unused", nats_url="unused", jwt_secret="s" * 32, **tls)


async def serve(tls_settings: Settings):
    binding = ServiceBinding(policy_pb2_grpc.add_PolicyServiceServicer_to_server,
                             policy_pb2_grpc.PolicyServiceServicer(), "cbr.policy.v1.PolicyService")
    return await start_server(tls_settings, [binding])


async def health(channel) -> int:
    return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def test_tls_server(pki):
    server = await serve(settings(tls_cert=pki["server_cert"], tls_key=pki["server_key"]))
    address = f"127.0.0.1:{server.port}"
    try:
        async with open_channel(settings(tls_ca=pki["ca"]), address) as channel:
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health(plain)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The sync checker runs in a thread: this event loop is the one serving.
        assert await asyncio.to_thread(is_serving, address, "", 3.0,
                                       credentials_from_env({"CBR_TLS_CA": pki["ca"]}))
        assert not await asyncio.to_thread(is_serving, address)
    finally:
        await server.stop(0)


async def test_mutual_tls_requires_a_client_certificate(pki):
    server = await serve(settings(tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                                  tls_client_ca=pki["ca"]))
    address = f"127.0.0.1:{server.port}"
    try:
        async with open_channel(settings(tls_ca=pki["ca"]), address) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health(anonymous)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        client = settings(tls_ca=pki["ca"], tls_cert=pki["client_cert"], tls_key=pki["client_key"])
        async with open_channel(client, address) as channel:
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
        env = {"CBR_TLS_CA": pki["ca"], "CBR_TLS_CERT": pki["client_cert"], "CBR_TLS_KEY": pki["client_key"]}
        assert await asyncio.to_thread(is_serving, address, "", 3.0, credentials_from_env(env))
    finally:
        await server.stop(0)

"""Two regions' replication services, each with its own region directory, answer GetReplicationCapabilities from
that configuration over gRPC (never asking a peer); a bad directory or a missing peer service stops the start."""
import dataclasses
import json
import uuid

import grpc
import pytest

from cbr.replication.v1 import replication_pb2, replication_pb2_grpc
from cbr_common.auth import issue_token
from cbr_common.grpc_errors import cbr_code_of
from cbr_common.settings import SettingsError
from cbr_replication.bootstrap import start
from tests.support.services import settings_for


def directory(tmp_path, local: str, peers: dict[str, str]) -> str:
    """A region directory naming `peers` (name -> transfer address), with a CA and token file for each."""
    entries = []
    for name, addr in peers.items():
        (tmp_path / f"{name}-ca.pem").write_text("PEM")
        (tmp_path / f"{name}.token").write_text("token")
        entries.append({"name": name, "transfer_addr": addr, "tls_ca": str(tmp_path / f"{name}-ca.pem"),
                        "credential_file": str(tmp_path / f"{name}.token")})
    path = tmp_path / f"{local}.json"
    path.write_text(json.dumps({"peers": entries}))
    return str(path)


# The backup and policy services it asks; nobody answers there, and capabilities never ask them.
PEERS = {"backup": "127.0.0.1:9", "policy": "127.0.0.1:9"}


async def started(infra, region: str, regions_file: str, peers: dict[str, str] = PEERS):
    settings = dataclasses.replace(settings_for(infra, "replication", peers), region=region,
                                   regions_file=regions_file)
    return await start(settings)


def metadata(infra):
    token = issue_token(infra.jwt_secret, project_id="project-regions", subject="tester",
                        roles=["cbr_full_access"], ttl_seconds=600)
    return (("authorization", f"Bearer {token}"),)


async def test_each_region_answers_its_own_peers(infra, tmp_path):
    a = await started(infra, "region-a", directory(tmp_path, "region-a", {"region-b": "127.0.0.1:7002",
                                                                           "region-c": "127.0.0.1:7003"}))
    b = await started(infra, "region-b", directory(tmp_path, "region-b", {"region-a": "127.0.0.1:7001"}))
    try:
        answers = {}
        for name, runtime in (("region-a", a), ("region-b", b)):
            async with grpc.aio.insecure_channel(runtime.address) as channel:
                stub = replication_pb2_grpc.ReplicationServiceStub(channel)
                answers[name] = await stub.GetReplicationCapabilities(
                    replication_pb2.GetReplicationCapabilitiesRequest(), metadata=metadata(infra), timeout=10)
        assert [(r.name, list(r.replication_destinations)) for r in answers["region-a"].regions] == [
            ("region-a", ["region-b", "region-c"])]
        assert [(r.name, list(r.replication_destinations)) for r in answers["region-b"].regions] == [
            ("region-b", ["region-a"])]
    finally:
        await a.stop(grace=1.0)
        await b.stop(grace=1.0)


async def test_without_a_directory_a_region_has_no_destinations(infra):
    runtime = await started(infra, "local", "")
    try:
        async with grpc.aio.insecure_channel(runtime.address) as channel:
            stub = replication_pb2_grpc.ReplicationServiceStub(channel)
            answer = await stub.GetReplicationCapabilities(replication_pb2.GetReplicationCapabilitiesRequest(),
                                                           metadata=metadata(infra), timeout=10)
            assert [(r.name, list(r.replication_destinations)) for r in answer.regions] == [("local", [])]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ReplicateBackup(replication_pb2.ReplicateBackupRequest(
                    backup_id=str(uuid.uuid4()), destination_region="region-b", destination_project_id="p",
                    destination_vault_id=str(uuid.uuid4())), metadata=metadata(infra), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert cbr_code_of(caught.value) == "ReplicationService.6901"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetReplicationCapabilities(replication_pb2.GetReplicationCapabilitiesRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await runtime.stop(grace=1.0)


async def test_a_plaintext_peer_without_the_dev_switch_stops_the_start(infra, tmp_path):
    path = tmp_path / "regions.json"
    (tmp_path / "b.token").write_text("token")
    path.write_text(json.dumps({"peers": [{"name": "region-b", "transfer_addr": "127.0.0.1:7002",
                                           "credential_file": str(tmp_path / "b.token")}]}))
    with pytest.raises(SettingsError, match="dev_plaintext"):
        await started(infra, "region-a", str(path))


async def test_a_missing_peer_service_stops_the_start(infra):
    with pytest.raises(SettingsError, match="CBR_POLICY_ADDR"):
        await started(infra, "local", "", peers={"backup": "127.0.0.1:9"})

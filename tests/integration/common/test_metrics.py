"""Metrics of the services, read over HTTP from a /metrics endpoint of the test's process (where the session's
services run): RPCs by method and status code, and the sampled gauges (vault usage, the outbox backlog) as their
samplers leave them."""
from __future__ import annotations

import types
import uuid

import grpc
import pytest

from cbr.vault.v1 import vault_pb2 as vp
from cbr_common import metrics
from cbr_vault.adapters.metric_samples import usage_sampler
from cbr_vault.adapters.tables import metadata as vault_metadata
from cbr_vault.domain.rules import GIB
from tests.support.calls import create_vault, expect_error
from tests.support.metrics import scrape
from tests.support.services import eventually

VAULT = "cbr.vault.v1.VaultService"


@pytest.fixture
async def endpoint():
    """/metrics of this process on a free port, as CBR_METRICS_ADDR=127.0.0.1:0 gives a service."""
    exporter = metrics.export(types.SimpleNamespace(metrics_addr="127.0.0.1:0", metrics_sample_seconds=1.0))
    yield f"127.0.0.1:{exporter.port}"
    await exporter.close()


async def test_calls_are_counted_by_method_and_code(endpoint, services, caller):
    before = await scrape(endpoint)
    await create_vault(caller, "counted")
    await expect_error(caller.vault.GetVault(vp.GetVaultRequest(vault_id=str(uuid.uuid4()))),
                       grpc.StatusCode.NOT_FOUND)
    await expect_error(services.caller(token="").vault.GetVault(vp.GetVaultRequest(vault_id=str(uuid.uuid4()))),
                       grpc.StatusCode.UNAUTHENTICATED)
    after = await scrape(endpoint)

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("cbr_rpc_calls_total", service=VAULT, method="CreateVault", code="OK") == 1
    assert moved("cbr_rpc_calls_total", service=VAULT, method="CreateVault", code="INVALID_ARGUMENT") == 0
    assert moved("cbr_rpc_calls_total", service=VAULT, method="GetVault", code="NOT_FOUND") == 1
    assert moved("cbr_rpc_calls_total", service=VAULT, method="GetVault", code="UNAUTHENTICATED") == 1
    assert moved("cbr_rpc_calls_total", service=VAULT, method="GetVault", code="OK") == 0
    assert moved("cbr_rpc_duration_seconds_count", service=VAULT, method="GetVault") == 2
    assert moved("cbr_rpc_duration_seconds_sum", service=VAULT, method="GetVault") > 0


async def test_vault_usage_is_sampled_and_a_deleted_vault_leaves(endpoint, services, caller):
    vault = await create_vault(caller, "sized", size_gb=3, threshold=70)
    sample = usage_sampler(services.runtimes["vault"].db)
    await sample()
    labels = {"project_id": caller.project_id, "vault_id": vault.vault_id, "vault_name": "sized"}
    scraped = await scrape(endpoint)
    assert scraped.value("cbr_vault_capacity_bytes", **labels) == 3 * GIB
    assert scraped.value("cbr_vault_usage_threshold_ratio", **labels) == pytest.approx(0.7)
    assert [s for s in scraped.samples if s.name == "cbr_vault_used_bytes" and s.labels == labels][0].value == 0
    await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))  # a task: gone once it ran

    async def gone() -> bool:
        try:
            await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))
            return False
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND
    await eventually(gone, timeout=30)
    await sample()
    assert not [s for s in (await scrape(endpoint)).samples if s.labels.get("vault_id") == vault.vault_id]


async def test_the_outbox_backlog_is_sampled(endpoint, services):
    runtime = services.runtimes["vault"]
    await metrics.outbox_sampler(runtime.db, vault_metadata)()
    scraped = await scrape(endpoint)
    assert scraped.has("cbr_outbox_backlog")
    assert scraped.value("cbr_outbox_backlog", schema="vault") >= 0  # present, whatever the relay left
    assert scraped.value("cbr_outbox_oldest_age_seconds", schema="vault") >= 0

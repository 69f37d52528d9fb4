"""A private Postgres and a three-node NATS cluster (cbr_devstack.nats_cluster) under a temp folder, migrated: the
Infra of tests that kill a NATS node. Its `nats.url` names every node, so tests/support/services.py connects the
services to the whole cluster."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from cbr_common.migrations import upgrade
from cbr_devstack.nats_cluster import NatsCluster
from cbr_devstack.postgres import PostgresCluster
from tests.support.stack import SERVICE_MODULES, Infra

REPLICAS = 3


def start_cluster_infra() -> Infra:
    base = Path(tempfile.mkdtemp(prefix="cbr-test-cluster-"))
    postgres = PostgresCluster(base / "pg", fast=True)
    cluster = NatsCluster(base / "nats-cluster", log_dir=base / "logs")
    infra = Infra(base, postgres, cluster)
    try:
        postgres.start()
        cluster.start()
        for module in SERVICE_MODULES:
            upgrade(postgres.url, module)
    except BaseException:
        cluster.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return infra


def node_stream(node, stream: str) -> dict | None:
    """The node's own copy of a stream, from its monitoring port: {"state": {...}, "cluster": {...}}; None when the
    node holds none (yet) or does not answer."""
    try:
        report = node.jsz()
    except OSError:
        return None
    for account in report.get("account_details") or ():
        for detail in account.get("stream_detail") or ():
            if detail.get("name") == stream:
                return detail
    return None


async def move_leader(nc, js, stream: str, node: str, timeout: float = 30.0) -> None:
    """Makes `node` the stream's leader: the leader steps down (JetStream elects another replica) until `node` is
    chosen; bounded by `timeout`."""
    import asyncio
    import time
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = (await js.stream_info(stream)).cluster.leader
        except Exception:  # noqa: BLE001 - no leader for a moment, during an election
            leader = None
        if leader == node:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node} did not become the leader of {stream} within {timeout:.0f} s")
        if leader:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(0.5)

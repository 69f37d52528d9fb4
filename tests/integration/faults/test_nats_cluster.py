"""A three-node JetStream cluster with replicated streams loses one node (SIGKILL: the leader of both streams, and
the server a consumer is connected to) during a backup and a burst of events: every event arrives once, the backup's job completes and leaves the work queue, nothing is lost; the node
then comes back and catches up with the streams."""
from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, func, insert, select

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.events.v1 import vault_events_pb2 as ev
from cbr.vault.v1 import vault_pb2 as vp
from cbr_backup.service.jobs import JOBS_STREAM
from cbr_common import jetstream
from cbr_common.db import Database, UnitOfWork
from cbr_common.jetstream import EVENTS_STREAM, EventConsumer, Subscription
from cbr_common.outbox import add_outbox_tables
from tests.support.backups import checkpoint, fill, get_backup, running_with_progress, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.nats_cluster import REPLICAS, move_leader, node_stream, start_cluster_infra
from tests.support.services import Services, eventually

BURST = 30          # vaults created while the backup runs, each one a cbr.vault.created event
KILL_AFTER = 10     # the node goes after this many


@pytest.fixture(scope="module")
def cluster_infra():
    infra = start_cluster_infra()
    yield infra
    infra.stop()


@pytest.fixture(scope="module")
async def cluster_services(cluster_infra):
    services = await Services.start(cluster_infra, workers=0, nats_replicas=REPLICAS)
    yield services
    await services.stop()


async def test_a_killed_node_loses_no_event_and_no_job(cluster_infra, cluster_services, capsys):
    infra, services = cluster_infra, cluster_services
    cluster = infra.nats
    caller = services.caller()
    nc, js = await jetstream.connect(cluster.url, REPLICAS)
    for stream in (EVENTS_STREAM.name, JOBS_STREAM.name):
        info = await js.stream_info(stream)
        assert info.config.num_replicas == REPLICAS and len(info.cluster.replicas) == REPLICAS - 1, info

    # A consumer of the test's own counts each handled vault.created in a table without a unique key: an event
    # handled twice would show as two rows, one never handled as none.
    schema = f"cluster_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    add_outbox_tables(metadata)
    seen = Table("seen", metadata, Column("id", BigInteger, primary_key=True, autoincrement=True),
                 Column("vault_id", String(64), nullable=False))
    db = Database(infra.postgres.url, schema=schema, pool_size=3)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)

    async def on_created(event, uow):
        await uow.session.execute(insert(seen).values(vault_id=event.vault_id))

    consumer = EventConsumer(js, f"clustertest-{schema}", [Subscription(ev.VaultCreated, on_created)],
                             lambda: UnitOfWork(db, metadata), metadata, ack_wait=5.0)
    counting = asyncio.create_task(consumer.run())
    victim = None
    try:
        # The node to kill: the one this test's own consumer is connected to, made the leader of both streams, so
        # the client must move to another node and both streams' replicas must elect new leaders. Moved before the
        # backup starts: the elections take seconds to tens of seconds, longer than the paced backup may have left.
        victim = next(node for node in cluster.nodes if node.port == nc.connected_url.port)
        for stream in (EVENTS_STREAM.name, JOBS_STREAM.name):
            await move_leader(nc, js, stream, victim.name)
        disk = await create_disk(caller, "cluster", 32 * MIB)
        fill(disk.path, 0, 30, seed=41)
        vault = await create_vault(caller, "cluster", DISK, BACKUP, resources=[ref(disk)])
        created = [vault.vault_id]
        await services.start_worker(rate_limit_mbps=3)  # ~10 s, so the node goes while the job runs
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        await running_with_progress(caller, task_id)
        for i in range(BURST):
            if i == KILL_AFTER:
                running = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
                assert running.status == tp.TASK_STATUS_RUNNING, running  # the node goes mid-backup
                victim.kill()  # SIGKILL, by pid
                killed = time.monotonic()
            created.append((await create_vault(caller, f"burst-{i}", DISK, BACKUP)).vault_id)
        task = await wait_success(caller, task_id, timeout=180)
        assert (await get_backup(caller, backup_id)).status == bp.BACKUP_STATUS_AVAILABLE

        async def all_seen():
            return set(await _seen(db, seen)) == set(created)
        await eventually(all_seen, timeout=120, interval=0.5)
        assert nc.is_connected and nc.connected_url.port != victim.port and nc.stats["reconnects"] >= 1
        settled = time.monotonic() - killed
        await asyncio.sleep(3.0)  # longer than the consumer's ack_wait: a redelivered event would be handled by now
        counts = await _seen(db, seen)
        assert sorted(counts) == sorted(created) and set(counts.values()) == {1}, counts

        # The real services' consumers too: the backup service heard of every vault (its inbox holds each
        # vault.created the vault service's outbox published), and the vault service of the backup's usage.
        published, unpublished, handled = _real_events(infra)
        assert not unpublished and len(published) == len(created) and published <= handled, \
            (unpublished, published - handled)
        async def usage_recorded():
            return (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.used_bytes > 0
        await eventually(usage_recorded, timeout=60, interval=0.5)

        # The job left the work queue (acked once its task was final): nothing waits there, nothing went twice.
        async def queue_empty():
            return (await js.stream_info(JOBS_STREAM.name)).state.messages == 0
        await eventually(queue_empty, timeout=30, interval=0.5)
        assert task.extra_info["attempts"] == "1", task.extra_info

        # Back: the node catches up with both streams from the others, and its copies are current again.
        victim.start()
        for stream in (EVENTS_STREAM.name, JOBS_STREAM.name):
            last_seq = (await js.stream_info(stream)).state.last_seq

            async def caught_up(stream=stream, last_seq=last_seq):
                copy = node_stream(victim, stream)
                info = await js.stream_info(stream)
                peers = {peer.name: peer.current for peer in info.cluster.replicas or ()}
                return (copy is not None and copy["state"]["last_seq"] == last_seq
                        and (info.cluster.leader == victim.name or peers.get(victim.name) is True))
            await eventually(caught_up, timeout=60, interval=0.5)
    finally:
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)
        await services.stop_workers()
        await nc.close()
        if victim is not None and not victim.is_running():
            victim.start()
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()
    with capsys.disabled():
        print(f"\n[measured] node {victim.name} killed mid-backup after {KILL_AFTER} of {BURST} vaults: every event "
              f"handled once {settled:.1f} s after the kill")


async def _seen(db, seen) -> dict[str, int]:
    async with db.sessions() as session:
        rows = (await session.execute(select(seen.c.vault_id, func.count()).group_by(seen.c.vault_id))).all()
    return {vault_id: count for vault_id, count in rows}


def _real_events(infra) -> tuple[set[str], list[str], set[str]]:
    """The vault service's published vault.created event ids, those it has not published, and the ids in the
    backup service's inbox."""
    with psycopg.connect(infra.postgres.conninfo()) as conn:
        rows = conn.execute("SELECT event_id, published_time FROM vault.outbox WHERE subject = %s",
                            (jetstream.Subscription(ev.VaultCreated, None).subject,)).fetchall()
        handled = {row[0] for row in conn.execute("SELECT event_id FROM backup.inbox WHERE consumer = 'backup'")}
    return {r[0] for r in rows if r[1] is not None}, [r[0] for r in rows if r[1] is None], handled

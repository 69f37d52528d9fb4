"""The Postgres primary crashes mid-backup and its synchronous standby is promoted: the services, on the multi-host
URL, answer UNAVAILABLE during the switch and then serve from the promoted node, the backup completes, every write
answered before the crash is there, and the outbox goes on publishing."""
from __future__ import annotations

import asyncio
import time

import grpc
import nats
import psycopg
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.events.v1 import vault_events_pb2 as ev
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common.db import Database, UnitOfWork
from cbr_common.errors import UnavailableError
from cbr_common.outages import is_outage, outage_log
from cbr_common.subjects import subject_of
from tests.support.backups import checkpoint, fill, get_backup, running_with_progress, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.pg_standby import StandbyInfra
from tests.support.services import Services, eventually

CLIENT_DEADLINE = 30.0
SWITCH_CALLS_SECONDS = 60.0  # the bound on the loop of calls through the switch; it ends at the first OK after it


@pytest.fixture(scope="module")
def standby_infra():
    infra = StandbyInfra.start()
    yield infra
    infra.stop()


@pytest.fixture(scope="module")
async def standby_services(standby_infra):
    services = await Services.start(standby_infra, workers=0)
    yield services
    await services.stop()


def _on(cluster, query: str, params=()) -> list[tuple]:
    with psycopg.connect(cluster.conninfo(), autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchall()


async def test_a_node_that_takes_no_writes_answers_unavailable_and_leaves_the_pool(standby_infra):
    """A connection that lands on a read-only node (a URL without target_session_attrs, or a node demoted under
    it) is an outage, not an internal error, and its connection is not handed out again."""
    from sqlalchemy import text
    from cbr_vault.adapters.tables import metadata
    standby = standby_infra.postgres.standby
    db = Database(standby.url, metadata.schema, pool_size=1)
    try:
        with pytest.raises(UnavailableError):
            async with UnitOfWork(db, metadata) as uow:
                failed_on = await uow.session.scalar(text("SELECT pg_backend_pid()"))
                await uow.session.execute(text("CREATE TABLE vault.not_on_a_standby (x int)"))
                await uow.commit()
        async with UnitOfWork(db, metadata) as uow:  # reads work there, on a new connection
            assert await uow.session.scalar(text("SELECT pg_backend_pid()")) != failed_on
        assert is_outage(UnavailableError("x")) and is_outage(psycopg.errors.ReadOnlySqlTransaction())
    finally:
        await db.close()


async def test_standby_promoted_mid_backup_callers_see_unavailable_then_ok_and_nothing_is_lost(
        standby_infra, standby_services, capsys):
    infra, services = standby_infra, standby_services
    primary, standby = infra.postgres.primary, infra.postgres.standby
    caller = services.caller()
    outage_log("database").reset()
    created: list[str] = []
    nc = await nats.connect(infra.nats.url)
    published: set[str] = set()

    async def on_vault_created(msg):
        event = ev.VaultCreated.FromString(msg.data)
        if event.project_id == caller.project_id:
            published.add(event.vault_id)

    await nc.subscribe(subject_of(ev.VaultCreated), cb=on_vault_created)
    try:
        disk = await create_disk(caller, "failover", 48 * MIB)
        fill(disk.path, 0, 40, seed=31)
        vault = await create_vault(caller, "failover", DISK, BACKUP, resources=[ref(disk)])
        created.append(vault.vault_id)
        await services.start_worker(rate_limit_mbps=10)
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        await running_with_progress(caller, task_id)
        for i in range(5):  # answered OK just before the crash: committed on both nodes
            created.append((await create_vault(caller, f"before-{i}", DISK, BACKUP)).vault_id)
        assert _on(primary, "SELECT inet_server_port()") == [(primary.port,)]

        primary.kill()  # SIGKILL of the postmaster: a crash, nothing flushed or said goodbye
        crashed = time.monotonic()
        codes: list[grpc.StatusCode] = []
        promoted = None
        attempted: set[str] = {f"before-{i}" for i in range(5)} | {"failover"}
        while time.monotonic() - crashed < SWITCH_CALLS_SECONDS:
            name = f"switch-{len(codes)}"  # a read and a write each round
            attempted.add(name)
            try:
                await caller.vault.ListVaults(vp.ListVaultsRequest(), timeout=CLIENT_DEADLINE)
                created.append((await create_vault(caller, name, DISK, BACKUP)).vault_id)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
            if promoted is None and len(codes) >= 3:  # the callers meet the outage before the standby takes over
                standby.promote()
                promoted = time.monotonic()
            if promoted is not None and codes[-1] == grpc.StatusCode.OK:
                break
            await asyncio.sleep(0.1)
        switched = time.monotonic() - promoted
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        assert grpc.StatusCode.UNAVAILABLE in codes[:3] and codes[-1] == grpc.StatusCode.OK, codes

        # Writes go to the promoted node now; the backup cut short by the crash completes there.
        after = await create_vault(caller, "after", DISK, BACKUP)
        created.append(after.vault_id)
        task = await wait_success(caller, task_id, timeout=180)
        assert (task.progress, task.bytes_done) == (100, task.bytes_total)
        assert task.extra_info["attempts"] == "1", dict(task.extra_info)  # the failover used up no attempt
        assert (await get_backup(caller, backup_id)).status == bp.BACKUP_STATUS_AVAILABLE
        attempted.add("after")

        # Every vault whose creation was answered OK, before the crash or during the switch, is on the promoted
        # node itself (which takes writes); nothing else is there but what a call tried (a write cut off by the
        # crash may have committed though its caller heard UNAVAILABLE).
        assert _on(standby, "SELECT pg_is_in_recovery()") == [(False,)]
        rows = _on(standby, "SELECT vault_id, name FROM vault.vaults WHERE project_id = %s", (caller.project_id,))
        assert set(created) <= {r[0] for r in rows} and {r[1] for r in rows} <= attempted, (created, rows)
        listed = await caller.vault.ListVaults(vp.ListVaultsRequest(), timeout=CLIENT_DEADLINE)
        assert {v.vault_id for v in listed.vaults} == {r[0] for r in rows}
        # The outbox went on: the events of the vaults from before and after the switch reached NATS, and no row
        # is left unpublished on the promoted node.
        await eventually(lambda: _async(published == {r[0] for r in rows}), timeout=30, interval=0.2)
        await eventually(lambda: _async(_on(standby, "SELECT count(*) FROM vault.outbox "
                                                      "WHERE published_time IS NULL") == [(0,)]), timeout=30)
    finally:
        await services.stop_workers()
        await nc.close()
    with capsys.disabled():
        print(f"\n[measured] primary crashed, standby promoted: {codes.count(grpc.StatusCode.UNAVAILABLE)} calls "
              f"answered UNAVAILABLE, the first OK {switched:.1f} s after the promotion; backup completed")


async def _async(value):
    return value

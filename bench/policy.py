"""`make bench-policy`: the policy service's scheduler and retention at scale.

    python -m bench.policy [--vaults 10000] [--backups 100000] [--out bench/results]

1. Ticks: --vaults vaults bound to policies (100 vaults per policy) that all fire in the same minute. The
   real scheduler (its own Postgres cluster, real SQL) runs on a clock set to that minute and asks a BackupService
   over gRPC for each checkpoint; the BackupService here only counts and answers (the backup service's own
   work per checkpoint is the backup benchmark's subject). Measured: from the clock reaching the fire time to
   the last checkpoint request answered, by one scheduler and by two racing on the same database, each
   scheduler in its own process (as replicas run).
2. Retention: --backups automatic backups spread over 100 vaults (and over one vault), served by the same
   stand-in through ListBackups pages of 1,000; the real retention run lists, decides (count + GFS in a time
   zone) and sends the deletes. Measured: seconds per vault.
Writes policy.json and policy.md to --out.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import time
import uuid
from pathlib import Path

import grpc
from sqlalchemy import func, select

from cbr.backup.v1 import backup_pb2, backup_pb2_grpc
from cbr.vault.v1 import vault_pb2, vault_pb2_grpc
from cbr_common.db import Database
from cbr_common.migrations import upgrade
from cbr_common.settings import Settings
from cbr_devstack.postgres import PostgresCluster
from cbr_policy.adapters.backups import GrpcBackups
from cbr_policy.adapters.schedule_tables import ticks
from cbr_policy.adapters.tables import bindings, metadata, policies
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.service.clock import ManualClock
from cbr_policy.service.retention_runs import RetentionRunner
from cbr_policy.service.scheduler import Scheduler

REPO = Path(__file__).resolve().parent.parent
FIRE = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.timezone.utc)
VAULTS_PER_POLICY = 100
PAGE = 1000


class StandIn(backup_pb2_grpc.BackupServiceServicer, vault_pb2_grpc.VaultServiceServicer):
    """Answers the scheduler's and retention's calls at once, counting them."""

    def __init__(self, backups_per_vault: dict[str, list[backup_pb2.Backup]] | None = None):
        self.checkpoints = 0
        self.deletes = 0
        self.last_request = 0.0
        self.backups = backups_per_vault or {}

    async def CreateCheckpoint(self, request, context):
        self.checkpoints += 1
        self.last_request = time.perf_counter()
        return backup_pb2.CreateCheckpointResponse(checkpoint=backup_pb2.Checkpoint(
            checkpoint_id=str(uuid.uuid5(uuid.NAMESPACE_URL, request.request_id)), vault_id=request.vault_id,
            status=backup_pb2.CHECKPOINT_STATUS_PROTECTING,
            resources=[backup_pb2.CheckpointResource(resource_id=request.vault_id)]))

    async def GetCheckpoint(self, request, context):
        return backup_pb2.GetCheckpointResponse(checkpoint=backup_pb2.Checkpoint(
            checkpoint_id=request.checkpoint_id, status=backup_pb2.CHECKPOINT_STATUS_AVAILABLE))

    async def ListBackups(self, request, context):
        found = self.backups.get(request.vault_id, [])
        page = found[request.page.offset:request.page.offset + (request.page.limit or PAGE)]
        return backup_pb2.ListBackupsResponse(backups=page, count=len(found))

    async def DeleteBackup(self, request, context):
        self.deletes += 1
        return backup_pb2.DeleteBackupResponse(task_id=str(uuid.uuid4()))

    async def GetVault(self, request, context):
        return vault_pb2.GetVaultResponse(vault=vault_pb2.Vault(vault_id=request.vault_id, locked=False))


async def serve(stand_in: StandIn) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
    backup_pb2_grpc.add_BackupServiceServicer_to_server(stand_in, server)
    vault_pb2_grpc.add_VaultServiceServicer_to_server(stand_in, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def settings(url: str, address: str) -> Settings:
    return Settings(service="policy", database_url=url, nats_url="nats://127.0.0.1:1", jwt_secret="bench",
                    peers={"backup": address, "vault": address}, peer_timeout_seconds=60)


async def add_policies(make_uow, vaults: int, pattern: str, definition: dict) -> list[tuple[str, list[str]]]:
    made = []
    for start in range(0, vaults, VAULTS_PER_POLICY):
        policy_id, project = str(uuid.uuid4()), f"bench-{start // VAULTS_PER_POLICY}"
        vault_ids = [str(uuid.uuid4()) for _ in range(min(VAULTS_PER_POLICY, vaults - start))]
        async with make_uow() as uow:
            await uow.session.execute(policies.insert().values(
                policy_id=policy_id, project_id=project, name="bench", operation_type="backup", enabled=True,
                trigger={"patterns": [pattern], "start_time": "2026-01-01T00:00:00+00:00"},
                operation_definition={"max_backups": -1, "retention_duration_days": -1, **definition},
                created_time=FIRE, updated_time=FIRE))
            await uow.session.execute(bindings.insert(), [
                {"vault_id": v, "operation_type": "backup", "policy_id": policy_id, "destination_vault_id": "",
                 "project_id": project, "bound_time": FIRE} for v in vault_ids])
            await uow.commit()
        made.append((project, vault_ids))
    return made


def _scheduler_process(url: str, address: str, ready, go, out) -> None:
    """One scheduler in its own process, as deployed: waits for `go`, makes one pass, reports what it fired."""
    async def run() -> None:
        db = Database(url, metadata.schema, pool_size=8)
        port = GrpcBackups(settings(url, address))
        try:
            scheduler = Scheduler(lambda: PolicyUnitOfWork(db), port, ManualClock(FIRE + dt.timedelta(seconds=1)),
                                  concurrency=64)
            async with PolicyUnitOfWork(db) as uow:  # a pooled connection, open before the clock starts
                await uow.session.execute(select(func.count()).select_from(ticks))
            ready.set()
            await asyncio.to_thread(go.wait)
            out.put(await scheduler.run_once())
        finally:
            await port.close()
            await db.close()
    asyncio.run(run())


async def bench_ticks(url: str, vaults: int, replicas: int) -> dict:
    """Each scheduler in its own process (they share nothing but the database, as replicas do); the stand-in
    BackupService in this one."""
    import multiprocessing

    stand_in = StandIn()
    server, address = await serve(stand_in)
    db = Database(url, metadata.schema, pool_size=8)
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = []
    try:
        scheduler = Scheduler(lambda: PolicyUnitOfWork(db), GrpcBackups(settings(url, address)),
                              ManualClock(FIRE - dt.timedelta(minutes=5)))
        await add_policies(scheduler._uow, vaults, "FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=0", {})
        t0 = time.perf_counter()
        await scheduler.reconcile()
        reconcile_s = time.perf_counter() - t0
        await scheduler._backups.close()
        readies = [ctx.Event() for _ in range(replicas)]
        procs = [ctx.Process(target=_scheduler_process, args=(url, address, ready, go, out)) for ready in readies]
        for proc in procs:
            proc.start()
        for ready in readies:
            if not await asyncio.to_thread(ready.wait, 120):
                raise RuntimeError("a scheduler process did not start")
        t0 = time.perf_counter()
        go.set()
        per_scheduler = [await asyncio.to_thread(out.get, True, 600) for _ in procs]
        total_s = stand_in.last_request - t0
        async with PolicyUnitOfWork(db) as uow:
            fired = (await uow.session.execute(ticks.select().where(ticks.c.status == "fired"))).all()
        return {"vaults": vaults, "replicas": replicas, "reconcile_s": round(reconcile_s, 3),
                "tick_to_last_request_s": round(total_s, 3), "requests": stand_in.checkpoints,
                "fired_ticks": len(fired), "fired_per_scheduler": per_scheduler,
                "per_vault_ms": round(1000 * total_s / max(1, vaults), 3)}
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.join, 60)
        await db.close()
        await server.stop(None)


def fake_backups(count: int, vault_id: str, now: dt.datetime) -> list[backup_pb2.Backup]:
    """count automatic backups, one every 20 minutes back from now, newest first."""
    made = []
    for i in range(count):
        b = backup_pb2.Backup(backup_id=str(uuid.uuid4()), vault_id=vault_id, auto_trigger=True,
                              status=backup_pb2.BACKUP_STATUS_AVAILABLE)
        b.created_time.FromDatetime(now - dt.timedelta(minutes=20 * i))
        made.append(b)
    return made


async def bench_retention(url: str, backups: int, vault_count: int) -> dict:
    now = FIRE + dt.timedelta(days=400)
    db = Database(url, metadata.schema, pool_size=4)
    make_uow = lambda: PolicyUnitOfWork(db)  # noqa: E731
    made = await add_policies(make_uow, vault_count, "FREQ=DAILY;INTERVAL=1;BYHOUR=3;BYMINUTE=0",
                              {"max_backups": 30, "day_backups": 14, "week_backups": 8, "month_backups": 12,
                               "year_backups": 2, "timezone": "Europe/Berlin"})
    per_vault = backups // vault_count
    stand_in = StandIn({v: fake_backups(per_vault, v, now) for _, vault_ids in made for v in vault_ids})
    server, address = await serve(stand_in)
    port = GrpcBackups(settings(url, address))
    try:
        runner = RetentionRunner(make_uow, port, ManualClock(now))
        t0 = time.perf_counter()
        kept = 0
        for project, vault_ids in made:
            for vault_id in vault_ids:
                kept += sum(d.keep for d in await runner.apply(project, vault_id))
        seconds = time.perf_counter() - t0
        return {"backups": per_vault * vault_count, "vaults": vault_count, "per_vault_s": round(seconds / vault_count, 4),
                "total_s": round(seconds, 3), "kept": kept, "deletes_sent": stand_in.deletes}
    finally:
        await port.close()
        await db.close()
        await server.stop(None)


def markdown(result: dict) -> str:
    lines = ["# CBR policy benchmark", "", f"Run {result['date']}, {result['cpu_count']} CPUs.", "",
             "## Ticks: vaults due in the same minute", "",
             "| vaults | schedulers | reconcile (s) | fire time to last checkpoint request (s) | per vault (ms) |"
             " requests | fired ticks | fired by each scheduler |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["ticks"]:
        lines.append(f"| {r['vaults']} | {r['replicas']} | {r['reconcile_s']} | {r['tick_to_last_request_s']} | "
                     f"{r['per_vault_ms']} | {r['requests']} | {r['fired_ticks']} | "
                     f"{', '.join(map(str, r.get('fired_per_scheduler', [])))} |")
    lines += ["", "## Retention", "", "| backups | vaults | per vault (s) | total (s) | kept | deletes sent |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in result["retention"]:
        lines.append(f"| {r['backups']} | {r['vaults']} | {r['per_vault_s']} | {r['total_s']} | {r['kept']} | "
                     f"{r['deletes_sent']} |")
    lines += ["", "Rule: max_backups 30 + GFS 14 days, 8 weeks, 12 months, 2 years in Europe/Berlin; one "
              "automatic backup every 20 minutes. The BackupService stand-in answers at once: these are the policy "
              "service's own costs (SQL, gRPC client, decisions).", ""]
    return "\n".join(lines)


def fresh_database(cluster: PostgresCluster, name: str) -> str:
    """A new database with the policy schema: every measurement starts from empty tables."""
    import psycopg
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url.rsplit("/", 1)[0] + "/" + name
    upgrade(url, "cbr_policy")
    return url


async def main_async(args) -> dict:
    import os
    work = args.work / "policy"
    shutil.rmtree(work, ignore_errors=True)
    cluster = PostgresCluster(work / "pg", fast=False)
    cluster.start()
    try:
        results = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "cpu_count": os.cpu_count(), "ticks": [], "retention": []}
        for replicas in (1, 2):
            url = fresh_database(cluster, f"ticks{replicas}")
            print(f"bench-policy: {args.vaults} vaults, {replicas} scheduler(s) ...", flush=True)
            results["ticks"].append(await bench_ticks(url, args.vaults, replicas))
            print(f"bench-policy: {results['ticks'][-1]}", flush=True)
        for vault_count in (100, 1):
            url = fresh_database(cluster, f"retention{vault_count}")
            print(f"bench-policy: retention over {args.backups} backups in {vault_count} vault(s) ...", flush=True)
            results["retention"].append(await bench_retention(url, args.backups, vault_count))
            print(f"bench-policy: {results['retention'][-1]}", flush=True)
        return results
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__.split("\n\n")[0])
    p.add_argument("--vaults", type=int, default=10_000)
    p.add_argument("--backups", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    args = p.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "policy.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "policy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

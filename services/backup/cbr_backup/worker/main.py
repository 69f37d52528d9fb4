"""Starts a worker from the environment: the backup service's settings plus CBR_STORE_DIR and CBR_KEK_FILE."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import urllib.parse
from pathlib import Path

from cbr_backup.adapters.tables import metadata
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.bootstrap import provider_for
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath.gc import repack_below
from cbr_backup.datapath.packs import pack_target_size
from cbr_backup.keys import key_provider
from cbr_backup.service.jobs import JOBS_STREAM
from cbr_backup.worker.context import Resources
from cbr_backup.worker.maintenance import start_removing_stale_temp_files
from cbr_backup.worker.runner import Worker
from cbr_common import jetstream, metrics
from cbr_common.db import Database
from cbr_common.logs import configure_logging
from cbr_common.outbox import OutboxRelay
from cbr_common.regions import load_regions
from cbr_common.server import run_until_signalled
from cbr_common.settings import Settings, SettingsError

log = logging.getLogger("cbr.worker")


def chunk_store(settings: Settings):
    """CBR_STORE_URL (s3://bucket[/prefix][?endpoint=URL&region=R]; credentials as boto3 finds them, e.g.
    AWS_ACCESS_KEY_ID) when set, else the folder CBR_STORE_DIR."""
    if settings.store_url:
        url = urllib.parse.urlsplit(settings.store_url)
        query = urllib.parse.parse_qs(url.query)
        if url.scheme != "s3" or not url.netloc:
            raise SettingsError(f"CBR_STORE_URL must look like s3://bucket[/prefix][?endpoint=URL&region=R], "
                                f"got {settings.store_url!r}")
        from cbr_backup.chunkstore import S3ChunkStore  # boto3 loads only where S3 is used
        return S3ChunkStore(url.netloc, url.path.strip("/"), endpoint_url=query.get("endpoint", [None])[0],
                            region_name=query.get("region", [None])[0])
    if not settings.store_dir.strip():
        raise SettingsError("missing required setting CBR_STORE_DIR (the chunk store's folder) or CBR_STORE_URL")
    return FsChunkStore(settings.store_dir)


def check_data_path_settings() -> None:
    """The data path's own settings (CBR_PACK_TARGET_MIB, CBR_REPACK_BELOW), read where they are used: a bad value
    stops the worker at start, not its first backup or GC."""
    try:
        pack_target_size(), repack_below()
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def resources(settings: Settings, db: Database) -> Resources:
    check_data_path_settings()
    keys = key_provider(settings)
    store = chunk_store(settings)
    start_removing_stale_temp_files(store)
    return Resources(make_uow=lambda: BackupUnitOfWork(db), database_url=settings.database_url,
                     store=store, provider=provider_for(settings),
                     snapshot_dir=Path(settings.pool_dir) / ".snapshots", rate_limit_mbps=settings.rate_limit_mbps,
                     make_job_uow=lambda: BackupUnitOfWork(db, settings.job_statement_timeout_seconds),
                     key_provider=keys, regions=load_regions(settings.regions_file, settings.region),
                     lease_seconds=settings.job_lease_seconds,
                     transfer_ttl_hours=settings.replication_transfer_ttl_hours,
                     peer_patience_seconds=settings.replication_peer_patience_seconds)


def worker_for(settings: Settings, db: Database) -> Worker:
    """A worker that publishes its own events (its outbox relay runs beside it on db)."""
    return Worker(resources(settings, db), lease_seconds=settings.job_lease_seconds, attempts=settings.job_attempts,
                  outbox=lambda js: OutboxRelay(db, metadata, js, poll_seconds=settings.outbox_poll_seconds))


def main() -> None:
    try:
        settings = Settings.from_env("worker")
        db = settings.database(metadata.schema, pool_size=3)
        worker = worker_for(settings, db)
    except SettingsError as exc:
        print(f"cbr_backup.worker: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("worker", settings.log_level)

    async def run(stop: asyncio.Event) -> None:
        # /metrics on CBR_METRICS_ADDR; the store's free space where the store is a folder (S3 has no such limit)
        exporter = metrics.export(settings, [] if settings.store_url else [metrics.store_sampler(settings.store_dir)])
        nc, js = await jetstream.connect(settings.nats_url, settings.nats_replicas)
        await jetstream.ensure_stream(js, JOBS_STREAM, settings.nats_replicas)
        log.info("taking jobs", extra={"fields": {"worker": worker.worker_id}})
        taking = asyncio.create_task(worker.run(js))
        await stop.wait()
        # A job cut short here is not acked: JetStream hands it to another worker when its lease ends.
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        await nc.close()
        await db.close()
        if exporter is not None:
            await exporter.close()

    run_until_signalled(run)

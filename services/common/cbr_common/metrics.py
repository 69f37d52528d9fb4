"""Prometheus metrics: the catalog every CBR process exports (deploy/README.md lists it), the RPC interceptor, the
/metrics endpoint (CBR_METRICS_ADDR) and the sampled gauges.

Counters and histograms move where the thing happens. Figures that need a database query are sampled on a short
timer (CBR_METRICS_SAMPLE_SECONDS) in the process's own event loop and its pool, never on the scrape: a scrape
costs no query, and a slow database delays a sample, not Prometheus.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import os
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Mapping, Sequence

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from cbr_common.interceptor import WrappedHandlers, rewrapped

log = logging.getLogger("cbr.metrics")

Sampler = Callable[[], Awaitable[None]]

# Jobs run from seconds (a small file system) to hours (a large first disk backup).
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class SampledGauge:
    """A gauge whose whole set of series is replaced at once by a sampler, so a series whose subject went (a
    deleted vault) leaves the scrape, and a scrape never sees half a sample."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], registry=REGISTRY):
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def replace(self, values: Mapping[tuple[str, ...], float], group: str | None = None) -> None:
        """The series now; with `group`, only the series whose first label is `group` are replaced."""
        values = {tuple(str(v) for v in key): float(value) for key, value in values.items()}
        if group is not None:
            values = {**{k: v for k, v in self._values.items() if k[0] != group}, **values}
        self._values = values  # one assignment: a scrape on the server's thread sees the old set or the new

    def value(self, *labels: str) -> float | None:
        return self._values.get(tuple(labels))

    def describe(self):
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self._values.items():
            family.add_metric(key, value)
        yield family


# --- Every service: calls and the outbox
RPC_CALLS = Counter("cbr_rpc_calls_total", "gRPC calls handled, by service, method and status code",
                    ["service", "method", "code"])
RPC_SECONDS = Histogram("cbr_rpc_duration_seconds", "gRPC call latency (a stream: until its last message)",
                        ["service", "method"])
OUTBOX_BACKLOG = SampledGauge("cbr_outbox_backlog", "events committed but not yet published to NATS", ["schema"])
OUTBOX_OLDEST = SampledGauge("cbr_outbox_oldest_age_seconds", "age of the oldest unpublished event (0: none)",
                             ["schema"])

# --- Jobs (backup service and workers: a job ends in whichever process records its end)
JOBS = Counter("cbr_jobs_total", "jobs ended, by type (backup, restore, delete, ...) and outcome (the task's final "
                                 "status: success, failed, timeout, cancelled)", ["type", "outcome"])
JOB_SECONDS = Histogram("cbr_job_duration_seconds", "a job's run, from its first start to its end",
                        ["type", "outcome"], buckets=JOB_BUCKETS)
for _outcome in ("success", "failed", "timeout", "cancelled"):  # at 0 from the start, so the first failure is an
    JOBS.labels("backup", _outcome)                                # increase() the backup-failed alert can see
BACKUP_READ_BYTES = Counter("cbr_backup_read_bytes_total", "bytes backups read from their resources")
BACKUP_LOGICAL_BYTES = Counter("cbr_backup_logical_bytes_total", "bytes of the resources' data backups cover")
BACKUP_STORED_BYTES = Counter("cbr_backup_stored_bytes_total", "bytes of new chunks backups added to the store")
RESTORE_BYTES = Counter("cbr_restore_written_bytes_total", "bytes restores wrote to disks and file systems")
QUEUE_DEPTH = SampledGauge("cbr_job_queue_depth", "tasks waiting for a worker (new or retrying)", ["type"])
QUEUE_AGE = SampledGauge("cbr_job_queue_oldest_age_seconds", "age of the oldest waiting task", ["type"])
JOBS_RUNNING = SampledGauge("cbr_jobs_running", "tasks a worker runs now", ["type"])
LAST_BACKUP = SampledGauge("cbr_resource_last_backup_timestamp_seconds",
                           "when the newest available backup of a resource was taken (Unix time)",
                           ["vault_id", "resource_id", "resource_name"])
STORE_SIZE = SampledGauge("cbr_store_size_bytes", "size of the file system under the chunk store (CBR_STORE_DIR)",
                          ["path"])
STORE_FREE = SampledGauge("cbr_store_free_bytes", "free bytes on the chunk store's file system", ["path"])

# --- Vaults, the scheduler, replication
VAULT_USED = SampledGauge("cbr_vault_used_bytes", "bytes a vault's backups take (as last measured)",
                          ["project_id", "vault_id", "vault_name"])
VAULT_CAPACITY = SampledGauge("cbr_vault_capacity_bytes", "a vault's size", ["project_id", "vault_id", "vault_name"])
VAULT_THRESHOLD = SampledGauge("cbr_vault_usage_threshold_ratio", "the vault's own alarm threshold, 0..1",
                               ["project_id", "vault_id", "vault_name"])
SCHEDULER_LAG = Gauge("cbr_scheduler_lag_seconds", "how late the oldest due schedule was at the scheduler's last "
                                                   "pass (0: none due)")
REPLICATION_LAG = SampledGauge("cbr_replication_lag_seconds", "age of the oldest backup without a replica in the "
                                                              "destination region (0: all replicated)",
                               ["vault_id", "resource_id", "region"])
REPLICATION_LAG_THRESHOLD = Gauge("cbr_replication_lag_threshold_seconds",
                                  "CBR_REPLICATION_LAG_ALERT_SECONDS of the replication service")


# --- Recording hooks: one call where the thing happens

def job_ended(operation_type: str, outcome: str, started: dt.datetime | None, ended: dt.datetime) -> None:
    """A task reached its final status (started None: it never ran, e.g. cancelled while it waited)."""
    JOBS.labels(operation_type, outcome).inc()
    if started is not None:
        JOB_SECONDS.labels(operation_type, outcome).observe(max((ended - started).total_seconds(), 0.0))


def backup_stored(read: int, logical: int, stored: int) -> None:
    BACKUP_READ_BYTES.inc(max(read, 0))
    BACKUP_LOGICAL_BYTES.inc(max(logical, 0))
    BACKUP_STORED_BYTES.inc(max(stored, 0))


def replication_lags(vault_id: str, lags: Iterable, threshold_seconds: float) -> None:
    """The lag check measured a vault (cbr_replication.domain.lag.Lag items)."""
    REPLICATION_LAG_THRESHOLD.set(threshold_seconds)
    REPLICATION_LAG.replace({(vault_id, lag.resource_id, lag.destination_region): lag.lag.total_seconds()
                             for lag in lags}, group=vault_id)


# --- The RPC interceptor

class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts each call by method and final status code and times it. Registered before the CallGuard, so it sees
    the code the guard's error mapping gave (a refused token counts as UNAUTHENTICATED)."""

    def __init__(self):
        self._handlers = WrappedHandlers()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        return self._handlers.get(details.method, handler, _timed_handler)


def _timed_handler(handler, full_method: str):
    service, _, method = full_method.lstrip("/").rpartition("/")
    return rewrapped(handler, lambda behavior, kind: (_timed_stream if kind.endswith("_stream") else _timed_unary)(
        behavior, service, method))


def _timed_unary(behavior, service: str, method: str):
    async def timed(request, context):
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            result = behavior(request, context)
            result = await result if inspect.isawaitable(result) else result
            code = _code_of(context, "OK")
            return result
        except BaseException as exc:
            code = _code_of(context, _code_of_exception(exc))
            raise
        finally:
            _count(service, method, code, started)
    return timed


def _timed_stream(behavior, service: str, method: str):
    async def timed(request, context):
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):
                await result
            else:
                for item in result:
                    yield item
            code = _code_of(context, "OK")
        except BaseException as exc:
            code = _code_of(context, _code_of_exception(exc))
            raise
        finally:
            _count(service, method, code, started)
    return timed


def _code_of(context, default: str) -> str:
    """The status the call ends with: what the handler (or the guard) set or aborted with, else `default`."""
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpcio: no code() on the servicer context
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)
    return default


def _code_of_exception(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"  # an AbortError carries no code of its own: the context has it


_SERIES: dict[tuple[str, str, str], tuple] = {}  # (service, method, code) -> its counter and histogram children


def _count(service: str, method: str, code: str, started: float) -> None:
    key = (service, method, code)
    series = _SERIES.get(key)
    if series is None:  # labels() takes a lock and builds a key each time: once per method and code is enough
        series = _SERIES[key] = (RPC_CALLS.labels(service, method, code), RPC_SECONDS.labels(service, method))
    series[0].inc()
    series[1].observe(time.perf_counter() - started)


# --- Sampled gauges every service has

def outbox_sampler(db, metadata) -> Sampler:
    """The backlog of this service's outbox (rows a relay has not published; set-aside ones included)."""
    from sqlalchemy import func, select
    from cbr_common.outbox import outbox_table_of

    table = outbox_table_of(metadata)
    schema = metadata.schema

    async def sample() -> None:
        async with db.sessions() as session:
            count, oldest = (await session.execute(
                select(func.count(), func.extract("epoch", func.now() - func.min(table.c.created_time)))
                .where(table.c.published_time.is_(None)))).one()
        OUTBOX_BACKLOG.replace({(schema,): count})
        OUTBOX_OLDEST.replace({(schema,): float(oldest or 0.0)})
    return sample


def store_sampler(path: str) -> Sampler:
    """Size and free space of the file system holding a folder chunk store."""
    def statvfs():
        at = os.path.abspath(path)
        while not os.path.exists(at) and os.path.dirname(at) != at:  # not made yet: the file system it will be on
            at = os.path.dirname(at)
        return os.statvfs(at)

    async def sample() -> None:
        stats = await asyncio.to_thread(statvfs)
        STORE_SIZE.replace({(path,): stats.f_blocks * stats.f_frsize})
        STORE_FREE.replace({(path,): stats.f_bavail * stats.f_frsize})
    return sample


# --- The endpoint

@dataclass
class Exporter:
    """/metrics of this process and its samplers' task."""
    port: int
    _server: object
    _task: asyncio.Task | None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


def export(settings, samplers: Sequence[Sampler] = ()) -> Exporter | None:
    """Serves /metrics on CBR_METRICS_ADDR (host:port; port 0 picks one) and runs the samplers every
    CBR_METRICS_SAMPLE_SECONDS; None when the setting is empty. Call from the running event loop."""
    if not settings.metrics_addr:
        return None
    from cbr_common.settings import SettingsError

    host, _, port = settings.metrics_addr.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
    except OSError as exc:  # the port taken, or an address not of this host: say which setting
        raise SettingsError(f"CBR_METRICS_ADDR {settings.metrics_addr}: {exc.strerror or exc}") from None
    task = asyncio.create_task(run_samplers(samplers, settings.metrics_sample_seconds), name="metrics-samplers") \
        if samplers else None
    exporter = Exporter(server.server_port, server, task)
    log.info("metrics served", extra={"fields": {"address": f"{host}:{exporter.port}"}})
    return exporter


async def run_samplers(samplers: Sequence[Sampler], interval: float) -> None:
    """Each sampler in turn, then a pause; one that fails (the database away) keeps its last values and is
    tried again at the next pass."""
    failing: set[int] = set()
    while True:
        for index, sample in enumerate(samplers):
            try:
                await sample()
                failing.discard(index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if index not in failing:  # once per failure, not every pass
                    log.warning("metrics sample failed", extra={"fields": {"error": repr(exc)[:300]}})
                failing.add(index)
        await asyncio.sleep(interval)

"""`make bench-replication`: a backup replicated between two regions, against `restic copy`, in one run (issue 12).

    python -m bench.replication [--size-gib 2] [--pool xfs|ext4] [--work bench/work] [--out bench/results]

Two regions on this machine (`python -m cbr_devstack up-regions --tls`: each its own Postgres, NATS, store,
services and worker; RegionTransferService on a TLS listener of its own, as a real deployment has it). Between
region A's worker and region B's transfer listener sits a small TCP proxy that counts the bytes both ways (TLS
included: what a WAN link carries). On the standard 2 GiB disk (bench.workload), measured through the services:

1. region A's own full backup of the disk (CreateCheckpoint to the task's success): the yardstick of target 1;
2. the full replica into a replication vault of region B (ReplicateBackup to the record's SUCCESS): time, wire
   bytes, the record's counters, region A's worker peak RSS growth over its RSS before the step;
3. the 1% change step (bench.workload.mutate), A's incremental backup, its replica: the same figures;
4. an unchanged backup's replica: the same figures;
5. the latest replica restored in B to a new disk, its sha256 against the changed disk.

restic 0.14 in the same run: the pristine disk backed up into one repository, a second initialised with
`--copy-chunker-params` from it, `restic copy` timed, the change step, the second backup and `restic copy` again;
bytes are what the copy added to the second repository. Targets (issue 12): full replica <= 1.5x our own full
backup; incremental wire bytes <= 0.25x what restic copy writes; no-change replica under 512 KiB on the wire;
worker growth under 64 MiB plus the manifest. Writes replication.json and replication.md to --out.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from bench.measure import MB, disk_usage, drop_caches
from bench.peers import ensure_installed
from bench.pools import PoolUnavailable, pool_folder
from bench.run import CHANGE_PERCENT, CHANGE_SEED, GIB, prepare_standard
from bench.service_path import _env_file, worker_pid
from bench.workload import mutate, sha256_file, sparse_copy

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.05
KIB = 1024
REGIONS = ("region-a", "region-b")
PASSWORD = "bench-password"


class CountingProxy:
    """127.0.0.1:<port> -> target, counting bytes each way. Bytes move socket to pipe to socket with splice(2), two
    threads per connection, never through Python buffers: the proxy stands for a network link, which costs the
    hosts no CPU, so it should cost as little as it can of the two cores the regions share (an asyncio copy loop
    took ~1 CPU-s of a 2 GiB full replica)."""

    PIPE_BYTES = 1 << 20

    def __init__(self, target: str):
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.up = self.down = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for source, sink, upward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, upward), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
        except OSError:
            pass  # the default pipe size works too, in more calls
        try:
            while n := os.splice(source.fileno(), write_end, self.PIPE_BYTES):
                with self._lock:
                    if upward:
                        self.up += n
                    else:
                        self.down += n
                while n:
                    n -= os.splice(read_end, sink.fileno(), n)
            ending = [(sink, socket.SHUT_WR)]  # end of stream: passed on, the other way may still carry bytes
        except OSError:
            ending = [(sink, socket.SHUT_RDWR), (source, socket.SHUT_RDWR)]
        finally:
            os.close(read_end)
            os.close(write_end)
        for sock, how in ending:
            try:
                sock.shutdown(how)
            except OSError:
                pass

    def counted(self) -> int:
        return self.up + self.down

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = 0


def devstack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cbr_devstack", *args], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"cbr_devstack {' '.join(args)}: {(done.stderr or done.stdout).strip()[-800:]}")
    return done


def rss_mb(pid: int | None, field: str) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) * 1024 / MB, 1)
    return None


class Region:
    """One region's gRPC stubs on its dev token (project "dev")."""

    def __init__(self, root: Path):
        from cbr.backup.v1 import backup_pb2_grpc, protectable_pb2_grpc, task_pb2_grpc
        from cbr.replication.v1 import replication_pb2_grpc
        from cbr.vault.v1 import vault_pb2_grpc
        self.root = root
        env = _env_file(root)
        self.metadata = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
        backup = grpc.insecure_channel(env["CBR_BACKUP_ADDR"])
        self.protectables = protectable_pb2_grpc.ProtectableServiceStub(backup)
        self.backups = backup_pb2_grpc.BackupServiceStub(backup)
        self.tasks = task_pb2_grpc.TaskServiceStub(backup)
        self.vaults = vault_pb2_grpc.VaultServiceStub(grpc.insecure_channel(env["CBR_VAULT_ADDR"]))
        self.replication = replication_pb2_grpc.ReplicationServiceStub(
            grpc.insecure_channel(env["CBR_REPLICATION_ADDR"]))

    def wait_task(self, task_id: str, timeout: float):
        from cbr.backup.v1 import task_pb2
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id), metadata=self.metadata).task
            if task.status == task_pb2.TASK_STATUS_SUCCESS:
                return task
            if task.status not in (task_pb2.TASK_STATUS_WAITING, task_pb2.TASK_STATUS_RUNNING):
                raise RuntimeError(f"task {task_id} ended {task_pb2.TaskStatus.Name(task.status)}: {task.error}")
            time.sleep(POLL_S)
        raise TimeoutError(f"task {task_id} did not finish in {timeout} s")

    def backup(self, vault_id: str, timeout: float):
        from cbr.backup.v1 import backup_pb2
        checkpoint = self.backups.CreateCheckpoint(backup_pb2.CreateCheckpointRequest(vault_id=vault_id),
                                                   metadata=self.metadata).checkpoint
        return self.wait_task(checkpoint.resources[0].task_id, timeout)

    def replicate(self, backup_id: str, vault_id: str, timeout: float):
        from cbr.replication.v1 import replication_pb2 as r
        reply = self.replication.ReplicateBackup(r.ReplicateBackupRequest(
            backup_id=backup_id, destination_region=REGIONS[1], destination_project_id="dev",
            destination_vault_id=vault_id), metadata=self.metadata)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.replication.GetReplicationRecord(r.GetReplicationRecordRequest(
                replication_record_id=reply.replication_record_id), metadata=self.metadata).replication_record
            if record.status == r.REPLICATION_STATUS_SUCCESS:
                return record
            if record.status in (r.REPLICATION_STATUS_FAILED, r.REPLICATION_STATUS_CANCELLED,
                                 r.REPLICATION_STATUS_SKIPPED):
                raise RuntimeError(f"replication ended {r.ReplicationStatus.Name(record.status)}: {record.error}")
            time.sleep(POLL_S)
        raise TimeoutError(f"replication {reply.replication_record_id} did not finish in {timeout} s")


def start_regions(root: Path) -> CountingProxy:
    """Both regions up with TLS between them, region A's path to B through the counting proxy."""
    devstack("up-regions", "--tls", "--run-dir", str(root))
    devstack("down-regions", "--run-dir", str(root))
    b_config = json.loads((root / REGIONS[1] / "stack.json").read_text())
    proxy = CountingProxy(f"127.0.0.1:{b_config['ports']['transfer']}")
    directory_file = root / REGIONS[0] / "regions.json"
    directory = json.loads(directory_file.read_text())
    for peer in directory["peers"]:
        if peer["name"] == REGIONS[1]:
            peer["transfer_addr"] = f"127.0.0.1:{proxy.port}"  # the certificate names 127.0.0.1: still valid
    directory_file.write_text(json.dumps(directory, indent=2) + "\n")
    for name in REGIONS:  # `up`, not up-regions, which would write the directory again
        devstack("up", "--run-dir", str(root / name))
    return proxy


def measure_cbr(pristine: Path, root: Path, timeout: float) -> dict:
    from cbr.backup.v1 import backup_pb2, protectable_pb2
    from cbr.common.v1 import common_pb2
    from cbr.vault.v1 import vault_pb2

    proxy = start_regions(root)
    a, b = Region(root / REGIONS[0]), Region(root / REGIONS[1])
    pid = worker_pid(a.root)
    size = pristine.stat().st_size
    disk = a.protectables.CreateDisk(protectable_pb2.CreateDiskRequest(name="bench", size_bytes=size),
                                     metadata=a.metadata).disk
    sparse_copy(pristine, Path(disk.path))
    source = a.vaults.CreateVault(vault_pb2.CreateVaultRequest(
        name="bench", object_type=common_pb2.OBJECT_TYPE_DISK, protect_type=vault_pb2.PROTECT_TYPE_BACKUP,
        size_gb=max(10, 4 * size >> 30), encrypted=True, resources=[vault_pb2.ResourceRef(
            resource_id=disk.resource_id, type=common_pb2.OBJECT_TYPE_DISK)]), metadata=a.metadata).vault
    replicas = b.vaults.CreateVault(vault_pb2.CreateVaultRequest(
        name="bench-replicas", object_type=common_pb2.OBJECT_TYPE_DISK, protect_type=vault_pb2.PROTECT_TYPE_REPLICATION,
        size_gb=max(10, 4 * size >> 30), encrypted=True), metadata=b.metadata).vault
    out: dict = {"proxy": "TCP proxy between region A's worker and region B's TLS transfer listener"}

    drop_caches()
    started = time.perf_counter()
    full = a.backup(source.vault_id, timeout)
    out["full_backup_s"] = round(time.perf_counter() - started, 3)

    def replicate(step: str, backup_id: str) -> None:
        drop_caches()
        proxy.reset()
        before = rss_mb(pid, "VmRSS")
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5\n")
        except (OSError, TypeError):
            pass
        t0 = time.perf_counter()
        record = a.replicate(backup_id, replicas.vault_id, timeout)
        seconds = time.perf_counter() - t0
        peak = rss_mb(pid, "VmHWM")
        counters = record.counters
        out[step] = {"seconds": round(seconds, 3), "wire_bytes": proxy.counted(), "wire_up_bytes": proxy.up,
                     "wire_down_bytes": proxy.down, "chunk_bytes_sent": counters.chunk_bytes_sent,
                     "present_bytes": counters.present_bytes, "resent_bytes": counters.resent_bytes,
                     "metadata_bytes": counters.metadata_bytes, "chunks_sent": counters.chunks_sent,
                     "digests_equal": bool(record.source_manifest_digest)
                     and record.source_manifest_digest == record.replica_manifest_digest,
                     "replica_backup_id": record.destination_backup_id,
                     "worker_rss_before_mb": before, "worker_peak_mb": peak,
                     "worker_growth_mb": round(peak - before, 1) if peak is not None and before else None}

    replicate("full_replica", full.backup_id)
    mutate(disk.path, CHANGE_PERCENT, CHANGE_SEED)
    changed_sha = sha256_file(disk.path)
    incr = a.backup(source.vault_id, timeout)
    out["incr_read_bytes"] = int(incr.extra_info.get("read_bytes", "0") or 0)
    replicate("incr_replica", incr.backup_id)
    same = a.backup(source.vault_id, timeout)
    replicate("nochange_replica", same.backup_id)
    manifest = a.backups.GetBackup(backup_pb2.GetBackupRequest(backup_id=incr.backup_id), metadata=a.metadata).backup
    blocks = -(-size // (128 * KIB))
    out["manifest_bytes_estimate"] = 33 * blocks  # 32 B per block id and its zero flag in memory (DESIGN 3)
    out["source_logical_bytes"] = manifest.logical_bytes
    restored = b.backups.CreateDiskFromBackup(backup_pb2.CreateDiskFromBackupRequest(
        backup_id=out["incr_replica"]["replica_backup_id"], name="restored"), metadata=b.metadata)
    b.wait_task(restored.task_id, timeout)
    new_disk = b.protectables.GetProtectable(protectable_pb2.GetProtectableRequest(
        type=common_pb2.OBJECT_TYPE_DISK, resource_id=restored.disk_id), metadata=b.metadata).protectable
    out["replica_restore_ok"] = sha256_file(new_disk.path) == changed_sha
    out["proxy_connections"] = proxy.connections
    return out


def measure_restic(pristine: Path, folder: Path, timeout: float) -> dict:
    ok, why = ensure_installed("restic", "restic")
    if not ok:
        return {"error": why}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source, target, cache = folder / "source", folder / "copy", folder / "cache"
    env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RESTIC_FROM_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(cache))
    disk = folder / "disk.raw"
    sparse_copy(pristine, disk)

    def restic(*args: str) -> float:
        t0 = time.perf_counter()
        done = subprocess.run(["restic", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"restic {' '.join(args[:3])}: {done.stderr.strip()[-500:]}")
        return time.perf_counter() - t0

    version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    restic("--repo", str(source), "init", "--repository-version", "2")
    restic("--repo", str(source), "backup", "--host", "bench", str(disk))
    restic("--repo", str(target), "init", "--repository-version", "2", "--from-repo", str(source),
           "--copy-chunker-params")
    before = disk_usage(target)["bytes"]
    drop_caches()
    full_s = restic("--repo", str(target), "copy", "--from-repo", str(source))
    after_full = disk_usage(target)["bytes"]
    mutate(disk, CHANGE_PERCENT, CHANGE_SEED)
    restic("--repo", str(source), "backup", "--host", "bench", str(disk))
    drop_caches()
    incr_s = restic("--repo", str(target), "copy", "--from-repo", str(source))
    after_incr = disk_usage(target)["bytes"]
    shutil.rmtree(folder, ignore_errors=True)
    return {"version": version, "full_copy_s": round(full_s, 3), "full_written_bytes": after_full - before,
            "incr_copy_s": round(incr_s, 3), "incr_written_bytes": after_incr - after_full}


def targets(cbr: dict, restic: dict) -> list[dict]:
    found = []
    if "full_replica" in cbr:
        ratio = cbr["full_replica"]["seconds"] / cbr["full_backup_s"]
        found.append({"target": "full replica <= 1.5x our own full backup", "value": round(ratio, 2),
                      "met": ratio <= 1.5})
    if "incr_replica" in cbr and restic.get("incr_written_bytes"):
        ratio = cbr["incr_replica"]["wire_bytes"] / restic["incr_written_bytes"]
        found.append({"target": "incremental wire bytes <= 0.25x restic copy's", "value": round(ratio, 3),
                      "met": ratio <= 0.25})
    if "nochange_replica" in cbr:
        wire = cbr["nochange_replica"]["wire_bytes"]
        found.append({"target": "no-change replica < 512 KiB on the wire", "value": wire, "met": wire < 512 * KIB})
    growth = [cbr[s]["worker_growth_mb"] for s in ("full_replica", "incr_replica", "nochange_replica")
              if s in cbr and cbr[s].get("worker_growth_mb") is not None]
    if growth:
        limit = 64 + cbr.get("manifest_bytes_estimate", 0) / MB
        found.append({"target": f"worker growth < 64 MiB + manifest ({limit:.1f} MiB)", "value": max(growth),
                      "met": max(growth) < limit})
    return found


def markdown(report: dict) -> str:
    cbr, restic = report["cbr"], report["restic"]
    lines = [f"# Replication bench ({report['disk_gib']:.2f} GiB standard disk, {report['pool']} pool)", "",
             f"Machine: {report['machine']}", ""]
    if "error" in cbr:
        lines += [f"CBR failed: {cbr['error']}", ""]
    else:
        lines += ["| step | seconds | wire bytes | chunk bytes sent | present | metadata | digests equal | "
                  "worker growth MiB |", "|---|---|---|---|---|---|---|---|",
                  f"| our own full backup (region A) | {cbr['full_backup_s']} | | | | | | |"]
        for step in ("full_replica", "incr_replica", "nochange_replica"):
            row = cbr[step]
            lines.append(f"| {step.replace('_', ' ')} | {row['seconds']} | {row['wire_bytes']:,} | "
                         f"{row['chunk_bytes_sent']:,} | {row['present_bytes']:,} | {row['metadata_bytes']:,} | "
                         f"{row['digests_equal']} | {row['worker_growth_mb']} |")
        lines += ["", f"Replica restored in region B byte-exact: {cbr['replica_restore_ok']}", ""]
    if "error" in restic:
        lines += [f"restic: {restic['error']}", ""]
    else:
        lines += [f"{restic['version']}: copy full {restic['full_copy_s']} s, {restic['full_written_bytes']:,} B "
                  f"written; copy after the change {restic['incr_copy_s']} s, {restic['incr_written_bytes']:,} B", ""]
    lines += ["| target | value | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--pool", choices=("xfs", "ext4"), default="xfs")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--step-timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    size = int(args.size_gib * GIB) // (64 * KIB) * (64 * KIB)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_standard(args.work, size, args.seed)
    cbr: dict
    try:
        with pool_folder(args.pool, args.work, 8 * size) as folder:
            root = folder / "regions"
            try:
                cbr = measure_cbr(prepared.pristine, root, args.step_timeout)
            except Exception as exc:
                cbr = {"error": f"{type(exc).__name__}: {str(exc)[:800]}"}
            finally:
                subprocess.run([sys.executable, "-m", "cbr_devstack", "down-regions", "--run-dir", str(root)],
                               capture_output=True, timeout=300)
    except PoolUnavailable as exc:
        cbr = {"error": f"pool {args.pool}: {exc}"}
    try:
        restic = measure_restic(prepared.pristine, args.work / "restic-copy", args.step_timeout)
    except Exception as exc:
        restic = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    prepared.cleanup()
    from bench.run import _cpu_model, _memory_gib
    report = {"disk_gib": size / GIB, "pool": args.pool, "machine": f"{_cpu_model()}, {os.cpu_count()} cores, "
              f"{_memory_gib()} GiB", "cbr": cbr, "restic": restic, "targets": targets(cbr, restic)}
    (args.out / "replication.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "replication.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if "error" not in cbr else 1


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-api`: the control plane's own speed (issue 14 item 5).

    python -m bench.api [--seconds 10] [--clients 4] [--vaults 50] [--rounds 1] [--out bench/results]
                        [--run-dir /tmp/cbr-bench-api] [--label NAME]

Starts the embedded stack (`python -m cbr_devstack up`) in a new --run-dir (removed at the end), stops its backup worker (so CreateCheckpoint measures the
API, not backups), makes --vaults vaults each holding one disk, then for each call and each replica count (1: the
stack's vault service; 2: a second `python -m cbr_vault` with the same environment on its own port, each client
alternating between the two addresses) runs --clients client processes, each with one call outstanding at a time,
for --seconds after a warm-up. Measured per row: calls/s, p50/p99 latency (ms, as the client sees it), and the CPU
time the serving processes spent per call (utime + stime of /proc/<pid>/stat over the window; clients are separate
processes and not counted). Writes api.json and api.md to --out (the records of earlier runs with other labels are
kept in api.json, so a before/after pair sits in one file).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP_S = 2.0
CALLS = ("GetVault", "ListVaults", "ListBackups", "CreateCheckpoint")
# Which service (as named in the stack's processes.json) serves each call; ListVaults pages 20 of --vaults.
SERVED_BY = {"GetVault": "vault", "ListVaults": "vault", "ListBackups": "backup", "CreateCheckpoint": "backup"}
LIST_LIMIT = 20


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5), after pid and comm


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- the client processes -------------------------------------------------------------------------------------------

def client(call: str, addresses: list[str], token: str, vault_ids: list[str], start: float, end: float,
           index: int, out) -> None:
    """Calls `call` in a loop, one at a time, over `addresses` in turn; records latencies of calls begun within
    [start, end). Sends (latencies, errors) back."""
    import grpc

    from cbr.backup.v1 import backup_pb2, backup_pb2_grpc
    from cbr.common.v1 import common_pb2
    from cbr.vault.v1 import vault_pb2, vault_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),)
    channels = [grpc.insecure_channel(a) for a in addresses]
    stubs = [(vault_pb2_grpc.VaultServiceStub(c), backup_pb2_grpc.BackupServiceStub(c)) for c in channels]
    page = common_pb2.PageRequest(limit=LIST_LIMIT)

    def one(n: int) -> None:
        vaults, backups = stubs[n % len(stubs)]
        vault_id = vault_ids[(n * 7 + index) % len(vault_ids)]
        if call == "GetVault":
            vaults.GetVault(vault_pb2.GetVaultRequest(vault_id=vault_id), metadata=metadata, timeout=10)
        elif call == "ListVaults":
            vaults.ListVaults(vault_pb2.ListVaultsRequest(page=page), metadata=metadata, timeout=10)
        elif call == "ListBackups":
            backups.ListBackups(backup_pb2.ListBackupsRequest(vault_id=vault_id, page=page), metadata=metadata,
                                timeout=10)
        else:
            backups.CreateCheckpoint(backup_pb2.CreateCheckpointRequest(vault_id=vault_id), metadata=metadata,
                                     timeout=10)

    latencies, errors, n = [], {}, index
    while True:
        t0 = time.time()
        if t0 >= end:
            break
        try:
            one(n)
            if t0 >= start:
                latencies.append(time.time() - t0)
        except grpc.RpcError as exc:
            key = f"{exc.code().name}: {(exc.details() or '')[:120]}"
            errors[key] = errors.get(key, 0) + 1
        n += 1
    for channel in channels:
        channel.close()
    out.put((latencies, errors))


def run_row(call: str, addresses: list[str], pids: list[int], token: str, vault_ids: list[str], clients: int,
            seconds: float, py_spy: str = "", profile: Path | None = None) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + WARMUP_S + 1.5  # spawning a client takes about a second on a busy machine
    end = start + seconds
    procs = [ctx.Process(target=client, args=(call, addresses, token, vault_ids, start, end, i, queue))
             for i in range(clients)]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start - time.time()))
    cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.time()
    spy = None
    if py_spy and profile is not None:  # samples the (first) serving process over the window, in collapsed stacks
        spy = subprocess.Popen([py_spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-d",
                                str(max(1, int(seconds) - 1)), "-p", str(pids[0]), "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(max(0.0, end - time.time()))
    cpu1, t1 = sum(cpu_seconds(p) for p in pids), time.time()
    if spy is not None:
        spy.wait(timeout=60)
    latencies, errors = [], {}
    for _ in procs:
        got, errs = queue.get(timeout=60)
        latencies += got
        for key, count in errs.items():
            errors[key] = errors.get(key, 0) + count
    for proc in procs:
        proc.join(timeout=30)
    calls = len(latencies)
    return {"call": call, "replicas": len(addresses), "clients": clients, "seconds": round(t1 - t0, 2),
            "calls": calls, "calls_per_s": round(calls / (t1 - t0), 1),
            "p50_ms": round(1000 * percentile(latencies, 0.50), 2) if calls else None,
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2) if calls else None,
            "mean_ms": round(1000 * statistics.fmean(latencies), 2) if calls else None,
            "service_cpu_ms_per_call": round(1000 * (cpu1 - cpu0) / calls, 3) if calls else None,
            "service_cpu_share": round((cpu1 - cpu0) / (t1 - t0), 2), "errors": errors}


# --- the stack ------------------------------------------------------------------------------------------------------

def env_file(run_dir: Path) -> dict:
    values = {}
    for line in (run_dir / "cbr.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip().removeprefix("export ")] = value.strip().strip("'\"")
    return values


def processes(run_dir: Path) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in json.loads((run_dir / "processes.json").read_text())["processes"]}


def process_env(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(address: str, timeout: float = 60) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.3)
    raise TimeoutError(f"{address} did not serve within {timeout} s")


def make_vaults(env: dict, count: int) -> list[str]:
    import grpc

    from cbr.backup.v1 import protectable_pb2, protectable_pb2_grpc
    from cbr.common.v1 import common_pb2
    from cbr.vault.v1 import vault_pb2, vault_pb2_grpc

    metadata = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
    protectables = protectable_pb2_grpc.ProtectableServiceStub(grpc.insecure_channel(env["CBR_BACKUP_ADDR"]))
    vaults = vault_pb2_grpc.VaultServiceStub(grpc.insecure_channel(env["CBR_VAULT_ADDR"]))
    ids = []
    for i in range(count):
        disk = protectables.CreateDisk(protectable_pb2.CreateDiskRequest(name=f"bench-{i}", size_bytes=1 << 20),
                                       metadata=metadata).disk
        vault = vaults.CreateVault(vault_pb2.CreateVaultRequest(
            name=f"bench-{i}", object_type=common_pb2.OBJECT_TYPE_DISK, protect_type=vault_pb2.PROTECT_TYPE_BACKUP,
            size_gb=10, tags=[common_pb2.Tag(key="bench", value=str(i))],
            resources=[vault_pb2.ResourceRef(resource_id=disk.resource_id, type=common_pb2.OBJECT_TYPE_DISK)]),
            metadata=metadata).vault
        ids.append(vault.vault_id)
    return ids


def devstack(command: str, run_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=timeout)


def bench(args) -> list[dict]:
    run_dir = Path(args.run_dir)
    if run_dir.exists():  # every run starts from empty tables: rows left by an earlier run would slow lists
        devstack("down", run_dir, 120)
        shutil.rmtree(run_dir)
    up = subprocess.run([sys.executable, "-m", "cbr_devstack", "up", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        raise RuntimeError(f"the embedded stack did not start: {(up.stderr or up.stdout).strip()[-800:]}")
    extra: subprocess.Popen | None = None
    try:
        env, pids = env_file(run_dir), processes(run_dir)
        worker = pids.get("worker")
        if worker:  # queued checkpoints stay queued: the bench measures the API, not the backups
            os.kill(worker, 15)
        vault_ids = make_vaults(env, args.vaults)
        second_port = free_port()
        vault_env = {**process_env(pids["vault"]), "CBR_LISTEN_ADDR": f"127.0.0.1:{second_port}",
                     "CBR_METRICS_ADDR": ""}
        log = open(run_dir / "vault-2.log", "ab")
        extra = subprocess.Popen([sys.executable, "-m", "cbr_vault"], env=vault_env, stdout=log,
                                 stderr=subprocess.STDOUT)
        wait_serving(f"127.0.0.1:{second_port}")
        rows = []
        for _round in range(args.rounds):
            for call in args.calls:
                service = SERVED_BY[call]
                first = env[f"CBR_{service.upper()}_ADDR"]
                setups = [([first], [pids[service]])]
                if service == "vault":
                    setups.append(([first, f"127.0.0.1:{second_port}"], [pids["vault"], extra.pid]))
                for addresses, serving in setups:
                    profile = Path(args.out) / f"api-profile-{call}.txt" if len(addresses) == 1 else None
                    row = run_row(call, addresses, serving, env["CBR_TOKEN"], vault_ids, args.clients,
                                  args.seconds, args.py_spy, profile)
                    row["round"] = _round
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        return rows
    finally:
        if extra is not None:
            extra.terminate()
            try:
                extra.wait(timeout=20)
            except subprocess.TimeoutExpired:
                extra.kill()
        devstack("down", run_dir, 120)
        shutil.rmtree(run_dir, ignore_errors=True)


def _spread(values: list) -> str:
    """median (min–max) of a row's repeats; the machine is shared, so the spread is part of the figure."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    median = statistics.median(values)
    return f"{median:g}" if len(values) == 1 else f"{median:g} ({min(values):g}–{max(values):g})"


def markdown(record: dict) -> str:
    lines = ["# CBR control-plane API benchmark", "",
             "Per call and replica count: median over the rounds (min–max). Service CPU per call: utime + stime of "
             "the serving process(es) from /proc over the window, divided by the calls answered in it (the clients "
             "are other processes).", ""]
    for label, run in record["runs"].items():
        code = f"; service code from PYTHONPATH {run['pythonpath']}" if run.get("pythonpath") else ""
        lines += [f"## {label}", "", f"{run['date']}, bench commit {run['commit']}{code}, {run['cpu_count']} CPUs, "
                  f"load average {run['loadavg']:.1f} at the start; {run['clients']} client processes, "
                  f"{run['seconds']} s a row.", "",
                  "| call | replicas | rounds | calls/s | p50 (ms) | p99 (ms) | service CPU per call (ms) | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        groups: dict[tuple[str, int], list[dict]] = {}
        for r in run["rows"]:
            groups.setdefault((r["call"], r["replicas"]), []).append(r)
        for (call, replicas), rows in groups.items():
            errors = sum(sum(r["errors"].values()) for r in rows)
            lines.append(f"| {call} | {replicas} | {len(rows)} | {_spread([r['calls_per_s'] for r in rows])} | "
                         f"{_spread([r['p50_ms'] for r in rows])} | {_spread([r['p99_ms'] for r in rows])} | "
                         f"{_spread([r['service_cpu_ms_per_call'] for r in rows])} | {errors} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--vaults", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every row this often (the spread)")
    parser.add_argument("--calls", default=",".join(CALLS), help=f"comma-separated subset of {CALLS}")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--run-dir", default="/tmp/cbr-bench-api")
    parser.add_argument("--label", default="latest", help="the name this run's rows are kept under in api.json")
    parser.add_argument("--py-spy", default="", help="a py-spy executable: profile the one-replica rows into "
                                                     "OUT/api-profile-CALL.txt (collapsed stacks; adds its own load)")
    args = parser.parse_args(argv)
    args.calls = [c for c in args.calls.split(",") if c]
    unknown = set(args.calls) - set(CALLS)
    if unknown:
        parser.error(f"unknown calls {sorted(unknown)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    started = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
               "cpu_count": os.cpu_count(), "loadavg": os.getloadavg()[0], "python": platform.python_version(),
               "clients": args.clients, "seconds": args.seconds,
               # a baseline runs older service code by putting its folders first on PYTHONPATH (bench/README.md)
               "pythonpath": os.environ.get("PYTHONPATH", "")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = bench(args)
    path = out / "api.json"
    record = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    record["runs"][args.label] = {**started, "rows": rows}
    path.write_text(json.dumps(record, indent=2) + "\n")
    (out / "api.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

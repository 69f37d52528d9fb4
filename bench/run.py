"""`make bench`: CBR against restic and borg on the standard workload, in one run on one machine.

    python -m bench.run [--size-gib 2] [--out bench/results] [--work bench/work] [--tools cbr,restic,borg] [--keep]

For each tool, on the same seeded disk: full backup; the change step; incremental backup; restore of the latest
backup to a new file (checked by sha256 against the changed disk); in-place restore of the full backup onto the
changed disk where the tool has one (checked against the pre-change disk); stored bytes after each backup; peak
RSS of each backup process. The page cache is dropped before every measured step when the kernel allows it.
Then the C chunker races pyfastcdc. Writes latest.json, latest.md and chart.png to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

from bench import chunker as chunker_race
from bench import report as reporting
from bench import service_path
from bench.measure import StepFailed, disk_usage, drop_caches
from bench.peers import Borg, Cbr, Restic, Runner, ensure_installed
from bench.workload import (CHANGE_BLOCK, MIB, allocated_bytes, chunker_buffer, generate, mutate, sha256_file,
                            sparse_copy)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHANGE_PERCENT = 1.0
CHANGE_SEED = 7


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=2.0, help="disk size in GiB (default 2)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="where the reports go")
    p.add_argument("--work", type=Path, default=REPO_ROOT / "bench" / "work",
                   help="work folder for the disk, repositories and restores (default bench/work)")
    p.add_argument("--seed", type=int, default=1, help="workload seed")
    p.add_argument("--tools", default="cbr,restic,borg", help="comma-separated subset of cbr,restic,borg")
    p.add_argument("--chunker-mib", type=int, default=256, help="chunker race buffer in MiB (0: skip the race)")
    p.add_argument("--step-timeout", type=float, default=None,
                   help="seconds allowed to each measured step (default 600 + 1200 per GiB)")
    p.add_argument("--borg-compression", default="lz4", help="borg --compression (default lz4, borg's default)")
    p.add_argument("--cbr-block-size", type=int, default=None, help="--block-size for CBR (default: the CLI's)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install a missing restic or borg")
    p.add_argument("--keep", action="store_true", help="keep the work folder's disks and repositories")
    p.add_argument("--no-service", action="store_true",
                   help="skip the same disk through the embedded stack (gRPC call to available)")
    return p.parse_args(argv)


# --- the machine ------------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str:
    """The file system type of the mount holding path (longest mount-point prefix in /proc/mounts)."""
    best, fstype = "", "unknown"
    path = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def machine_info(work: Path, runners: list[Runner]) -> dict:
    tools = {}
    for runner in runners:
        try:
            tools[runner.name] = runner.version() if runner.available()[0] else None
        except (StepFailed, OSError) as exc:
            tools[runner.name] = f"unknown ({exc})"
    try:
        import pyfastcdc
        tools["pyfastcdc"] = f"pyfastcdc {pyfastcdc.__version__}"
    except ImportError:
        tools["pyfastcdc"] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "work_fs": _filesystem(work),
        "tools": tools,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews every tool's times alike, but say so."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- one tool ---------------------------------------------------------------------------------------------------

def measure_tool(runner: Runner, pristine: Path, pristine_sha: str, *, drop: bool, keep: bool,
                 expected_changed_sha: dict) -> dict:
    """All steps of one tool on a fresh copy of the pristine disk; errors end the tool's run, not the benchmark."""
    result = reporting.empty_result()
    ok, why = runner.available()
    result["available"] = ok
    if not ok:
        result["error"] = why
        return result
    result["version"] = runner.version()
    rss: dict = {}
    reports: dict = {}
    result["rss_mb"] = rss
    result["tool_reports"] = reports
    disk = runner.folder / "disk.raw"

    def before_step() -> None:
        if drop:
            drop_caches()

    def stored() -> dict:
        usage = {"bytes": 0, "apparent_bytes": 0, "files": 0}
        for path in runner.stored_paths():
            for key, value in disk_usage(path).items():
                usage[key] += value
        return usage

    step = "setup"
    try:
        if runner.folder.exists():
            shutil.rmtree(runner.folder)
        runner.setup()
        result["settings"] = runner.settings()
        sparse_copy(pristine, disk)

        step = "full backup"
        before_step()
        m = runner.full(disk)
        result["full_s"], rss["full"], reports["full"] = round(m.seconds, 3), round(m.peak_rss_mb, 1), \
            runner.tool_report(m)
        after_full = stored()
        result["full_stored_bytes"] = after_full["bytes"]
        result["full_stored_apparent_bytes"] = after_full["apparent_bytes"]

        step = "change step"
        changed = mutate(disk, CHANGE_PERCENT, CHANGE_SEED)
        changed_sha = sha256_file(disk)
        expected_changed_sha.setdefault("sha256", changed_sha)
        expected_changed_sha.setdefault("blocks", len(changed))
        if changed_sha != expected_changed_sha["sha256"]:
            raise StepFailed("the change step gave a different disk than for the previous tool")

        step = "incremental backup"
        before_step()
        m = runner.incremental(disk)
        result["incr_s"], rss["incr"], reports["incr"] = round(m.seconds, 3), round(m.peak_rss_mb, 1), \
            runner.tool_report(m)
        after_incr = stored()
        result["incr_added_bytes"] = after_incr["bytes"] - after_full["bytes"]
        result["incr_added_apparent_bytes"] = after_incr["apparent_bytes"] - after_full["apparent_bytes"]
        result["peak_rss_mb"] = max(rss["full"], rss["incr"])
        result.update(runner.extra_sizes())

        step = "restore to a new disk"
        target_dir = runner.folder / "restore"
        before_step()
        m, restored = runner.restore_latest(target_dir)
        result["restore_s"], rss["restore"] = round(m.seconds, 3), round(m.peak_rss_mb, 1)
        result["restore_ok"] = sha256_file(restored) == changed_sha
        result["restored_allocated_bytes"] = allocated_bytes(restored)
        shutil.rmtree(target_dir)

        step = "in-place restore"
        before_step()
        m = runner.inplace_restore_full(disk)
        if m is not None:
            result["inplace_restore_s"], rss["inplace_restore"] = round(m.seconds, 3), round(m.peak_rss_mb, 1)
            result["inplace_restore_ok"] = sha256_file(disk) == pristine_sha
        else:
            result["inplace_restore_ok"] = None
    except Exception as exc:  # one tool's failure is reported; the others still run
        result["error"] = f"{step} failed: {type(exc).__name__}: {str(exc).strip()[:1500]}"
    finally:
        try:
            runner.teardown()
        except Exception as exc:
            result["teardown_error"] = f"{type(exc).__name__}: {exc}"
        if not keep:
            shutil.rmtree(runner.folder, ignore_errors=True)
    return result


def make_runners(names: list[str], work: Path, timeout: float, args: argparse.Namespace) -> list[Runner]:
    runners: list[Runner] = []
    for name in names:
        folder = work / name
        if name == "restic":
            runners.append(Restic(folder, timeout=timeout))
        elif name == "borg":
            runners.append(Borg(folder, timeout=timeout, compression=args.borg_compression))
        elif name == "cbr":
            runners.append(Cbr(folder, timeout=timeout, block_size=args.cbr_block_size))
        else:
            raise SystemExit(f"unknown tool {name!r}: choose among cbr, restic, borg")
    return runners


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so that finally blocks stop Postgres and clean up
    size = max(MIB, int(args.size_gib * (1 << 30)) // MIB * MIB)
    timeout = args.step_timeout or 600 + 1200 * size / (1 << 30)
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    notes: list[str] = []

    if not args.no_install:
        for binary, package in (("restic", "restic"), ("borg", "borgbackup")):
            if binary in names:
                ok, why = ensure_installed(binary, package)
                if why != "already installed":
                    notes.append(f"{binary}: {why}")

    runners = make_runners(names, work, timeout, args)
    machine = machine_info(work, runners)
    drop = drop_caches()
    cache = ("dropped before every measured step (sync; echo 3 > /proc/sys/vm/drop_caches)" if drop
             else "warm cache (dropping the page cache is not allowed here)")
    notes.append(f"page cache: {cache}; the same for every tool")
    notes.append("times are wall clock of the tool's process, measured from outside; peak RSS is the wait4 "
                 "ru_maxrss of the tool's process tree, taken by a small launcher so that the harness's own memory "
                 "is not in it (MB = 2^20 bytes); the larger of full and incremental")
    notes.append("stored bytes are real blocks (sum of st_blocks * 512) of the repository folder; apparent "
                 "sizes are in latest.json (*_apparent_bytes)")

    pristine = work / "pristine.raw"
    print(f"bench: generating a {size / (1 << 30):.2f} GiB disk in {pristine}", flush=True)
    started = time.perf_counter()
    layout = generate(pristine, size, args.seed)
    generate_s = time.perf_counter() - started
    pristine_sha = sha256_file(pristine)
    workload = layout.summary()
    workload.update({
        "allocated_bytes": allocated_bytes(pristine),
        "sha256": pristine_sha,
        "generate_s": round(generate_s, 2),
        "cache": cache,
        "change": {"percent": CHANGE_PERCENT, "block_bytes": CHANGE_BLOCK, "seed": CHANGE_SEED,
                   "blocks": round(size // CHANGE_BLOCK * CHANGE_PERCENT / 100)},
        "step_timeout_s": timeout,
    })

    results: dict = {}
    changed: dict = {}
    service: dict = {}
    try:
        for runner in runners:
            print(f"bench: {runner.name} ...", flush=True)
            results[runner.name] = measure_tool(runner, pristine, pristine_sha, drop=drop, keep=args.keep,
                                                expected_changed_sha=changed)
            r = results[runner.name]
            print(f"bench: {runner.name}: full {r.get('full_s')} s, incr {r.get('incr_s')} s, restore "
                  f"{r.get('restore_s')} s, in place {r.get('inplace_restore_s')} s"
                  + (f" -- {r['error']}" if r.get("error") else ""), flush=True)
        workload["changed_sha256"] = changed.get("sha256")
        if "cbr" in names and not args.no_service:
            print("bench: cbr through the service path (embedded stack, gRPC, worker) ...", flush=True)
            service = service_path.measure(pristine, work / "service", CHANGE_PERCENT, CHANGE_SEED, timeout)
            print(f"bench: service path: {service}", flush=True)
    finally:
        if not args.keep:
            pristine.unlink(missing_ok=True)
            for runner in runners:
                shutil.rmtree(runner.folder, ignore_errors=True)

    chunker: dict = {"cbr_mb_s": None, "pyfastcdc_mb_s": None}
    if args.chunker_mib > 0:
        print(f"bench: chunker race on {args.chunker_mib} MiB", flush=True)
        buf = chunker_buffer(args.chunker_mib * MIB, args.seed)
        chunker = chunker_race.race(buf)
        del buf
        if chunker.get("cbr_error"):
            notes.append(f"chunker: cbr not measured: {chunker['cbr_error']}")

    machine["loadavg_end"] = _loadavg()
    rep = reporting.build_report(machine, workload, results, chunker, notes, service)
    paths = reporting.write_all(rep, args.out)
    print(reporting.markdown(rep))
    print("bench: wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

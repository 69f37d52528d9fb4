"""`make bench`: CBR against restic and borg, in one run on one machine, on two workloads.

    python -m bench.run [--workload standard|usr|both] [--size-gib 2] [--usr-gib 4] [--pools xfs,ext4,rbd]
                        [--out bench/results] [--work bench/work] [--tools cbr,restic,borg] [--keep] ...

For each workload ("standard": seeded random extents; "usr": an ext4 image holding files from /usr): CBR through
its services (the headline: the embedded stack, on an XFS reflink pool, on ext4, and on RBD disks with an RGW
store), then each tool's command line (CBR's data-path CLI, restic, borg) on the same disk: full backup; the
change step; incremental backup; restore of the latest backup to a new file (checked by sha256 against the
changed disk); stored bytes and peak RSS. Once, on the standard workload, CBR's data path against an S3 store
(the rbd row's radosgw when it runs, else moto) counts requests by type. The page cache is dropped before every
measured step when the kernel allows it. Then the C chunker races pyfastcdc. Writes
latest.json, latest.md and chart.png to --out.
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

from typing import Callable

from bench import chunker as chunker_race
from bench import pools
from bench import report as reporting
from bench import s3_path, service_path, usr_workload
from bench.measure import StepFailed, disk_usage, drop_caches
from bench.peers import Borg, Cbr, Restic, Runner, ensure_installed
from bench.workload import (CHANGE_BLOCK, MIB, allocated_bytes, chunker_buffer, generate, mutate, sha256_file,
                            sparse_copy)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHANGE_PERCENT = 1.0
CHANGE_SEED = 7
GIB = 1 << 30
WORKLOADS = ("standard", "usr")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("standard", "usr", "both"), default="both",
                   help="standard (random extents), usr (ext4 image of /usr files) or both (default)")
    p.add_argument("--size-gib", type=float, default=2.0, help="standard disk size in GiB (default 2)")
    p.add_argument("--usr-gib", type=float, default=4.0,
                   help="usr image size in GiB (default 4), filled to 62.5%% of it (2.5 GB of 4 GiB)")
    p.add_argument("--pools", default="xfs,ext4,rbd",
                   help="service-path pools: xfs (reflink loop mount), ext4, rbd (private Ceph: RBD disks, RGW store)")
    p.add_argument("--s3-endpoint", default=None,
                   help="S3 endpoint for the data path's request count (default: a moto server the bench starts)")
    p.add_argument("--s3-bucket", default=s3_path.DEFAULT_BUCKET, help="bucket for --s3-endpoint")
    p.add_argument("--no-s3", action="store_true", help="skip the data path against S3")
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
                   help="skip the service path (the embedded stack, gRPC call to available)")
    p.add_argument("--full-pairs", type=int, default=3,
                   help="alternating pairs of fresh full backups, restic's then the service's (standard workload, "
                        "xfs pool), whose median ratio is the full backup's robust figure (default 3, 0: none)")
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

def measure_tool(runner: Runner, pristine: Path, pristine_sha: str, change: Callable[[Path], None], *, drop: bool,
                 keep: bool, expected_changed_sha: dict) -> dict:
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
        before = stored()

        step = "full backup"
        before_step()
        m = runner.full(disk)
        result["full_s"], rss["full"], reports["full"] = round(m.seconds, 3), round(m.peak_rss_mb, 1), \
            runner.tool_report(m)
        after_full = stored()
        result["full_stored_bytes"] = after_full["bytes"] - before["bytes"]
        result["full_stored_apparent_bytes"] = after_full["apparent_bytes"] - before["apparent_bytes"]
        result["full_objects"] = after_full["files"] - before["files"]
        if result["full_stored_bytes"] > 0:
            result["objects_per_gib"] = round(result["full_objects"] / (result["full_stored_bytes"] / GIB), 1)

        step = "change step"
        change(disk)
        changed_sha = sha256_file(disk)
        expected_changed_sha.setdefault("sha256", changed_sha)
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
        result["incr_read_bytes"] = reports["incr"].get("read_bytes") if runner.name == "cbr" else None
        result["peak_rss_mb"] = max(rss["full"], rss["incr"])
        result.update(runner.extra_sizes())

        step = "restore to a new disk"
        target_dir = runner.folder / "restore"
        before_step()
        m, restored = runner.restore_latest(target_dir)
        result["restore_s"], rss["restore"] = round(m.seconds, 3), round(m.peak_rss_mb, 1)
        result["restore_ok"] = sha256_file(restored) == changed_sha
        result["restored_allocated_bytes"] = allocated_bytes(restored)
        restore_report = getattr(runner, "reports", {}).get("restore") or {}
        if restore_report.get("needed_bytes"):
            result["restore_read_ratio"] = round(restore_report["store_read_bytes"] / restore_report["needed_bytes"],
                                                 4)
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


# --- the workloads ----------------------------------------------------------------------------------------------

class Prepared:
    """One workload's pristine disk, its change step (in place, the same bytes for every tool) and its record."""

    def __init__(self, name: str, pristine: Path, change: Callable[[Path], None], summary: dict,
                 scratch: list[Path], change_image: Callable | None = None):
        self.name, self.pristine, self.change, self.summary, self.scratch = name, pristine, change, summary, scratch
        self.change_image = change_image  # the same change into an RBD image (bench.rbd_disk.RbdDisk); None: none

    def cleanup(self) -> None:
        for path in self.scratch:
            path.unlink(missing_ok=True)


def prepare_standard(work: Path, size: int, seed: int) -> Prepared:
    pristine = work / "pristine.raw"
    print(f"bench: generating a {size / GIB:.2f} GiB disk in {pristine}", flush=True)
    started = time.perf_counter()
    layout = generate(pristine, size, seed)
    summary = layout.summary()
    summary.update({
        "name": "standard",
        "generate_s": round(time.perf_counter() - started, 2),
        "change": {"percent": CHANGE_PERCENT, "block_bytes": CHANGE_BLOCK, "seed": CHANGE_SEED,
                   "blocks": round(size // CHANGE_BLOCK * CHANGE_PERCENT / 100)},
    })
    return Prepared("standard", pristine, lambda disk: mutate(disk, CHANGE_PERCENT, CHANGE_SEED), summary,
                    [pristine], change_image=lambda image: image.change(CHANGE_PERCENT, CHANGE_SEED))


def prepare_usr(work: Path, image_bytes: int) -> Prepared:
    """The ext4 image of /usr files, its changed twin, and the delta between them (bench.usr_workload)."""
    import hashlib
    pristine, changed = work / "usr-pristine.img", work / "usr-changed.img"
    fill = int(image_bytes * usr_workload.DEFAULT_FILL_BYTES / usr_workload.DEFAULT_IMAGE_BYTES)
    print(f"bench: building a {image_bytes / GIB:.2f} GiB ext4 image with {fill / 1e9:.2f} GB of /usr", flush=True)
    started = time.perf_counter()
    try:
        files = usr_workload.build(pristine, work, image_bytes=image_bytes, fill_bytes=fill)
        ops = usr_workload.change_plan(files)
        usr_workload.make_changed(pristine, changed, work, ops)
        offsets = usr_workload.diff_blocks(pristine, changed)
    except BaseException:
        pristine.unlink(missing_ok=True)
        changed.unlink(missing_ok=True)
        raise
    kinds: dict = {}
    for op in ops:
        entry = kinds.setdefault(op.kind, {"ops": 0, "bytes": 0})
        entry["ops"] += 1
        entry["bytes"] += op.length
    file_bytes = sum(size for _, size in files)
    summary = {
        "name": "usr", "size_bytes": image_bytes, "fill_target_bytes": fill, "files": len(files),
        "file_bytes": file_bytes, "first_file": files[0][0] if files else None,
        "last_file": files[-1][0] if files else None,
        "selection_sha256": hashlib.sha256("\n".join(p for p, _ in files).encode()).hexdigest(),
        "generate_s": round(time.perf_counter() - started, 2),
        "change": {"percent": usr_workload.CHANGE_PERCENT, "seed": usr_workload.CHANGE_SEED, "kinds": kinds,
                   "planned_bytes": usr_workload.plan_bytes(ops),
                   "delta_blocks": len(offsets), "delta_bytes": len(offsets) * usr_workload.DELTA_BLOCK},
    }
    return Prepared("usr", pristine, lambda disk: usr_workload.apply_delta(disk, changed, offsets), summary,
                    [pristine, changed])


def run_workload(prepared: Prepared, runners: list[Runner], args: argparse.Namespace, work: Path, timeout: float,
                 drop: bool, pool_kinds: list[str]) -> dict:
    """The service path on each pool, then every tool's CLI, on one workload."""
    pristine_sha = sha256_file(prepared.pristine)
    workload = dict(prepared.summary, allocated_bytes=allocated_bytes(prepared.pristine), sha256=pristine_sha)
    service: dict = {}
    s3_rgw: dict = {}
    if any(r.name == "cbr" for r in runners) and not args.no_service:
        size = prepared.pristine.stat().st_size
        for kind in pool_kinds:
            label = f"{prepared.name}, service path, {kind} pool"
            print(f"bench: {label} ...", flush=True)
            try:
                if kind == "rbd" and prepared.change_image is None:
                    raise pools.PoolUnavailable(f"the rbd row runs on the standard workload only, not {prepared.name}")
                pairs = args.full_pairs if kind == "xfs" and prepared.name == "standard" else 0
                peer = _fresh_full(runners, prepared.pristine, work, timeout, drop) if pairs else None
                with pools.pool_folder(kind, work, 4 * size + 4 * GIB + 2 * pairs * size) as folder:
                    if kind == "rbd":
                        service[kind] = service_path.measure(
                            prepared.pristine, folder / "stack", prepared.change_image, timeout, provider="ceph",
                            while_up=_s3_on_rgw(prepared, args, work, s3_rgw))
                    else:
                        service[kind] = service_path.measure(prepared.pristine, folder / "stack", prepared.change,
                                                             timeout, peer_full=peer, full_pairs=pairs)
            except pools.PoolUnavailable as exc:
                service[kind] = {"error": str(exc)}
            service[kind]["pool"] = kind
            print(f"bench: {label}: {_brief(service[kind])}", flush=True)
    results: dict = {}
    changed: dict = {}
    for runner in runners:
        print(f"bench: {prepared.name}, {runner.name} ...", flush=True)
        results[runner.name] = measure_tool(runner, prepared.pristine, pristine_sha, prepared.change, drop=drop,
                                            keep=args.keep, expected_changed_sha=changed)
        print(f"bench: {prepared.name}, {runner.name}: {_brief(results[runner.name])}", flush=True)
    workload["changed_sha256"] = changed.get("sha256")
    return {"workload": workload, "results": results, "service": service, "s3_rgw": s3_rgw}


def _fresh_full(runners: list[Runner], pristine: Path, work: Path, timeout: float,
                drop: bool) -> Callable[[], float] | None:
    """restic's full backup of a fresh copy of pristine into a fresh repository, timed as measure_tool times it
    (page cache dropped first); None without restic among the tools."""
    restic = next((r for r in runners if r.name == "restic"), None)
    if restic is None or not restic.available()[0]:
        return None

    def full() -> float:
        runner = type(restic)(work / "pair-restic", timeout=timeout)
        shutil.rmtree(runner.folder, ignore_errors=True)
        try:
            runner.setup()
            disk = runner.folder / "disk.raw"
            sparse_copy(pristine, disk)
            if drop:
                drop_caches()
            return runner.full(disk).check().seconds
        finally:
            runner.teardown()
            shutil.rmtree(runner.folder, ignore_errors=True)
    return full


def _s3_on_rgw(prepared: Prepared, args: argparse.Namespace, work: Path, out: dict) -> Callable[[dict], None] | None:
    """The S3 request count against the ceph stack's radosgw while it is up (in a bucket of the bench's own),
    unless --s3-endpoint names another server, --no-s3, or CBR's data path is not among the tools."""
    if args.no_s3 or args.s3_endpoint or "cbr" not in args.tools.split(",") or prepared.name != "standard":
        return None

    def count(s3: dict) -> None:
        print("bench: cbr data path against the ceph stack's radosgw (request counts) ...", flush=True)
        try:
            out.update(s3_path.measure(prepared.pristine, work / "s3", prepared.change, endpoint=s3["endpoint"],
                                       bucket=args.s3_bucket, access_key=s3["access_key"],
                                       secret_key=s3["secret_key"], server="Ceph radosgw (the rbd row's cluster)"))
        finally:
            shutil.rmtree(work / "s3", ignore_errors=True)
    return count


def _brief(r: dict) -> str:
    text = f"full {r.get('full_s')} s, incr {r.get('incr_s')} s, restore {r.get('restore_s')} s"
    return text + (f" -- {r['error']}" if r.get("error") else "")


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so that finally blocks stop Postgres, unmount and clean up
    size = max(MIB, int(args.size_gib * GIB) // MIB * MIB)
    usr_bytes = max(64 * MIB, int(args.usr_gib * GIB) // MIB * MIB)
    timeout = args.step_timeout or 600 + 1200 * max(size, usr_bytes) / GIB
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    pool_kinds = [p.strip() for p in args.pools.split(",") if p.strip() in pools.POOLS]
    unknown = [p.strip() for p in args.pools.split(",") if p.strip() and p.strip() not in pools.POOLS]
    if unknown:
        raise SystemExit(f"unknown pool(s) {', '.join(unknown)}: choose among {', '.join(pools.POOLS)}")
    wanted = list(WORKLOADS) if args.workload == "both" else [args.workload]
    notes: list[str] = []

    if not args.no_install:
        for binary, package, wanted_here in (("restic", "restic", "restic" in names),
                                             ("borg", "borgbackup", "borg" in names),
                                             ("mkfs.xfs", "xfsprogs", "xfs" in pool_kinds and not args.no_service)):
            if wanted_here:
                ok, why = ensure_installed(binary, package)
                if why != "already installed":
                    notes.append(f"{binary}: {why}")

    runners = make_runners(names, work, timeout, args)
    machine = machine_info(work, runners)
    drop = drop_caches()
    cache = ("dropped before every measured step (sync; echo 3 > /proc/sys/vm/drop_caches)" if drop
             else "warm cache (dropping the page cache is not allowed here)")
    notes.append(f"page cache: {cache}; the same for every tool")
    notes.append("service path: wall clock from the gRPC call (CreateCheckpoint, CreateDiskFromBackup) to the "
                 "task's success as GetTask sees it (the backup `available`; the new disk synced); peak RSS is "
                 "the worker's VmHWM, reset before each step")
    notes.append("data path: wall clock of the tool's process, measured from outside; peak RSS is the wait4 "
                 "ru_maxrss of the tool's process tree, taken by a small launcher so that the harness's own memory "
                 "is not in it (MB = 2^20 bytes); the larger of full and incremental")
    notes.append("stored bytes are real blocks (sum of st_blocks * 512) of the repository or store folder; "
                 "apparent sizes are in latest.json (*_apparent_bytes); objects are the files in it")
    if "rbd" in pool_kinds and not args.no_service:
        notes.append("rbd + rgw row: the disk is an RBD image written from the workload's file, so restic's row is "
                     "restic on the same data as a file; its stored bytes and objects are the S3 listing of the "
                     "stack's radosgw bucket (object sizes); diff_iterate is taken from the full's anchor snapshot "
                     "before the incremental and rounded out to 128 KiB blocks (sparse images report growth from "
                     "an object's old end, hence more than the changed bytes)")

    workloads: dict = {}
    s3: dict = {}
    for name in wanted:
        try:
            prepared = (prepare_standard(work, size, args.seed) if name == "standard"
                        else prepare_usr(work, usr_bytes))
        except (usr_workload.UsrUnavailable, OSError) as exc:
            workloads[name] = {"workload": {"name": name, "error": str(exc)}, "results": {}, "service": {}}
            print(f"bench: {name} workload not built: {exc}", flush=True)
            continue
        try:
            workloads[name] = run_workload(prepared, runners, args, work, timeout, drop, pool_kinds)
            workloads[name]["workload"]["cache"] = cache
            workloads[name]["workload"]["step_timeout_s"] = timeout
            rgw = workloads[name].pop("s3_rgw", None)
            if rgw:
                s3 = dict(rgw, workload=name)
            elif name == "standard" and "cbr" in names and not args.no_s3:
                print("bench: cbr data path against S3 (request counts) ...", flush=True)
                s3 = s3_path.measure(prepared.pristine, work / "s3", prepared.change, endpoint=args.s3_endpoint,
                                     bucket=args.s3_bucket)
                s3["workload"] = name
                print(f"bench: S3: {s3.get('objects_per_gib')} objects per GiB, requests "
                      f"{s3.get('requests')} {s3.get('error') or ''}", flush=True)
        finally:
            if not args.keep:
                prepared.cleanup()
                for runner in runners:
                    shutil.rmtree(runner.folder, ignore_errors=True)
                shutil.rmtree(work / "s3", ignore_errors=True)

    chunker: dict = {"cbr_mb_s": None, "pyfastcdc_mb_s": None}
    if args.chunker_mib > 0:
        print(f"bench: chunker race on {args.chunker_mib} MiB", flush=True)
        buf = chunker_buffer(args.chunker_mib * MIB, args.seed)
        chunker = chunker_race.race(buf)
        del buf
        if chunker.get("cbr_error"):
            notes.append(f"chunker: cbr not measured: {chunker['cbr_error']}")

    machine["loadavg_end"] = _loadavg()
    rep = reporting.build_report(machine, workloads, chunker, notes, s3)
    paths = reporting.write_all(rep, args.out)
    print(reporting.markdown(rep))
    print("bench: wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

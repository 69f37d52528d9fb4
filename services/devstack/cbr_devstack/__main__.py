"""Command line: python -m cbr_devstack up|down|status [--run-dir .run]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cbr_devstack.stack import down, status, up

COMMANDS = {"up": up, "down": down, "status": status}


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="folder for data, logs, stack.json and cbr.env (default: ./.run)")
    parser = argparse.ArgumentParser(prog="python -m cbr_devstack",
                                     description="Run CBR locally: a private Postgres and NATS plus the four services.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", parents=[common], help="start everything (or say it already runs)")
    commands.add_parser("down", parents=[common], help="stop what `up` started; data stays")
    commands.add_parser("status", parents=[common], help="show the recorded processes and whether they run")
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args.run_dir)


if __name__ == "__main__":
    sys.exit(main())

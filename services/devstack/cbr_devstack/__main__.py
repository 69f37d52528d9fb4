"""Command line: python -m cbr_devstack up|down|status|wipe|up-regions|down-regions [--run-dir .run]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cbr_devstack.regions import DEFAULT_REGIONS, down_regions, up_regions
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
    start.add_argument("--region", default=None,
                       help="the region this stack is (CBR_REGION; chosen on the first start, default local); "
                            "a second region needs its own --run-dir")
    start.add_argument("--replicas", type=int, default=None,
                       help="processes of each service, each on its own port, listed in cbr.env (default: "
                            "CBR_SERVICE_REPLICAS, else as many as the last start, 1 at first)")
    commands.add_parser("down", parents=[common], help="stop what `up` started; ports, secret and data stay")
    regions = commands.add_parser("up-regions", parents=[common],
                                  help="start one stack per region in RUN_DIR/<name>, each naming the others as "
                                       "peers (plaintext on 127.0.0.1: a dev setup)")
    regions.add_argument("--names", default=",".join(DEFAULT_REGIONS),
                         help=f"the regions, comma-separated (default: {','.join(DEFAULT_REGIONS)})")
    regions.add_argument("--tls", action="store_true",
                         help="between regions TLS, as a real deployment has it: each backup service serves the "
                              "region transfer API on a listener of its own with a self-signed certificate")
    commands.add_parser("down-regions", parents=[common], help="stop every region `up-regions` started")
    commands.add_parser("status", parents=[common],
                        help="show the recorded processes; exit 0 if all run, 1 if some do, 3 if none does")
    commands.add_parser("wipe", parents=[common],
                        help="remove the data, ports and secret (refused while the stack runs)")
    args = parser.parse_args(argv)
    named = ([args.region] if args.command == "up" and args.region is not None else
             [name.strip() for name in args.names.split(",")] if args.command == "up-regions" else [])
    if named:
        from cbr_common.regions import NAME  # what CBR_REGION may be
        for name in named:
            if not NAME.match(name):
                parser.error(f"{name!r} is not a region name (lower-case letters, digits and '-', at most 63)")
    try:
        if args.command == "up":
            return up(args.run_dir, new_ports=args.new_ports, region=args.region, replica_count=args.replicas)
        if args.command == "up-regions":
            if len(named) < 2 or len(set(named)) != len(named):
                parser.error("--names needs at least two different regions")
            return up_regions(args.run_dir, tuple(named), tls=args.tls)
        if args.command == "down-regions":
            return down_regions(args.run_dir)
        return {"down": down, "status": status, "wipe": wipe}[args.command](args.run_dir)
    except EarlierVersionError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

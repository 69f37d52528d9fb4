"""The `cbr` command: parse the arguments, load the configuration, run one command, turn failures into exit codes."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Sequence

import grpc

from cbr_cli import exit_codes
from cbr_cli.arguments import UsageError
from cbr_cli.client import CbrClient
from cbr_cli.commands import audit, backup_files, backups, policy, protectables, replication, tasks, vault
from cbr_cli.config import DEFAULT_TIMEOUT, ENV_FILE, Config, ConfigError, load_config
from cbr_cli.errors import describe
from cbr_cli.output import Output
from cbr_cli.progress import WatchEndedError

CONVENTIONS_HELP = """\
conventions:
  cbr GROUP VERB: a group per resource type (vault, disk, server, file-system, backup,
  task, policy, replication) and one verb set: create, show, list, update, delete; other verbs
  where no CRUD verb fits (restore, verify, gc, watch, cancel, preview, add-resources,
  associate-policy, ...); VERB-NOUN for what has no group of its own (backup
  show-checkpoint, backup create-disk, vault list-tags, policy list-ticks).
  Ids are UUIDs (names are not accepted as ids). Sizes take a unit: 512M, 10G, 1.5T
  (powers of 1024); a bare number is bytes.
  --json: a list is {"items": [...], "count": N} (N counts every match, paging
  aside), even for one or no item: the list commands, tags, and `backup create
  --wait` (the backups it made). Anything else is the bare object: the thing
  shown, created or changed; a started task's {"task_id": ...}; with --wait, the
  final task. Field names and enum values as in the .proto files (the CLI's
  `file_system` type is OBJECT_TYPE_TURBO there). Errors stay `error: ...` lines
  on stderr.

"""

CONFIG_HELP = f"""\
configuration (each from the environment, else from the env file: --env-file, or {ENV_FILE}
in the current folder or the nearest one above it, as `make up` writes it):
  CBR_VAULT_ADDR, CBR_BACKUP_ADDR      host:port of the vault and backup services
  CBR_POLICY_ADDR, CBR_REPLICATION_ADDR
  CBR_TOKEN                            bearer token (JWT) sent with every call
  CBR_TLS_CA                           connect with TLS, trusting this CA file
  CBR_TLS_CERT, CBR_TLS_KEY            client certificate and key, for mutual TLS

"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbr", description="Command-line client of CBR, the Cloud Backup and Recovery service.",
        epilog=CONVENTIONS_HELP + CONFIG_HELP + exit_codes.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(parser, with_defaults=True)
    # The same options are accepted after the command too (`cbr vault list --json`); SUPPRESS keeps a value
    # given before the command from being reset there.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _add_global_options(common, with_defaults=False)
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for module in (vault, protectables, backups, backup_files, tasks, policy, replication, audit):
        module.register(groups, common)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON (its shape: conventions, below)")
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g}; a watch lasts as long as its task)")
    parser.add_argument("--env-file", metavar="PATH", help=f"read settings missing from the environment here "
                                                           f"(default: {ENV_FILE}, searched upwards)")
    if with_defaults:
        parser.set_defaults(json=False, timeout=DEFAULT_TIMEOUT, env_file=None)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(as_json=args.json)
    try:
        config = load_config(os.environ, args.env_file, timeout=args.timeout)
        return asyncio.run(run(args, config, out))
    except ConfigError as exc:
        out.error(str(exc))
        return exit_codes.USAGE
    except KeyboardInterrupt:
        out.error("interrupted (any task keeps running; `cbr task watch ID` follows it again)")
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        # The reader left (`cbr task list | head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OTHER


async def run(args: argparse.Namespace, config: Config, out: Output) -> int:
    try:
        async with CbrClient(config) as client:
            code = await args.handler(args, client, out)
        return exit_codes.OK if code is None else code
    except grpc.aio.AioRpcError as error:
        out.error(describe(error, args.fields))
        return exit_codes.for_status(error.code())
    except UsageError as exc:
        out.error(str(exc))
        return exit_codes.USAGE
    except WatchEndedError as exc:
        out.error(str(exc))
        return exit_codes.OTHER

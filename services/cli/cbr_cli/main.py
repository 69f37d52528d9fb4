"""The `cbr` command: parse the arguments, load the configuration, resolve names, run one command, turn failures
into exit codes.

A command module registers with one line: add it to the import of cbr_cli.commands and to the tuple build_parser
loops over; its `register(groups, common)` adds its group (arguments.add_group; naming an existing group, e.g.
"backup", adds verbs to it) and its commands (arguments.add_command). Arguments typed with arguments.VAULT_ID, BACKUP_ID, ... take names and short ids,
resolved before the handler runs; handlers print through Output, which gives --json, --quiet and JSON errors."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Sequence

import grpc

from cbr_cli import __version__, exit_codes
from cbr_cli.arguments import UsageError
from cbr_cli.client import CbrClient
from cbr_cli.commands import audit, backup_files, backups, policy, protectables, replication, tasks, vault
from cbr_cli.config import DEFAULT_TIMEOUT, ENV_FILE, Config, ConfigError, load_config
from cbr_cli.errors import describe
from cbr_cli.output import Output
from cbr_cli.progress import WatchEndedError
from cbr_cli.resolve import AmbiguousNameError, NameNotFoundError, resolve_args
from cbr_cli.commands import completion  # noqa: I001  (apart from the line new command modules join)
from cbr_common.grpc_errors import cbr_code_of

CONVENTIONS_HELP = """\
conventions:
  cbr GROUP VERB: a group per resource type (vault, disk, server, file-system, backup,
  task, policy, replication) and one verb set: create, show, list, update, delete; other verbs
  where no CRUD verb fits (restore, verify, gc, watch, cancel, preview, add-resources,
  associate-policy, ...); VERB-NOUN for what has no group of its own (backup
  show-checkpoint, backup create-disk, vault list-tags, policy list-ticks).
  Vaults, disks, servers, file systems, policies and backups are taken by id, by
  name (exact, within the project) or by a unique id prefix of 8 or more characters
  (the tables show ids that way); a name matching several objects exits 13 listing
  them. Tasks, checkpoints and replication records: by id. Sizes take a unit: 512M,
  10G, 1.5T (powers of 1024); a bare number is bytes.
  --json: a list is {"items": [...], "count": N} (N counts every match, paging
  aside), even for one or no item: the list commands, tags, and `backup create
  --wait` (the backups it made). Anything else is the bare object: the thing
  shown, created or changed; a started task's {"task_id": ...}; with --wait, the
  final task. Field names and enum values as in the .proto files (the CLI's
  `file_system` type is OBJECT_TYPE_TURBO there), ids whole. An error is one line
  on stderr: `error: ...`, under --json {"error": {"code": ..., "message": ...,
  "exit_code": N, "details": {...}}} (code: the gRPC status name, or USAGE,
  AMBIGUOUS, TASK_UNSUCCESSFUL, SKIPPED, ...).
  -q/--quiet: only ids, one a line (`backup create`: the backups it started).

"""

CONFIG_HELP = f"""\
configuration, each setting from the first of (highest first): the profile named
by --profile; the environment; --env-file; the profile named by CBR_PROFILE; {ENV_FILE}
in the current folder or the nearest one above it (as `make up` writes it); the
[default] profile. Profiles: CBR_CONFIG_FILE, else ~/.config/cbr/config, INI
sections [default] and [profile NAME] with keys vault_endpoint, backup_endpoint,
policy_endpoint, replication_endpoint, token (or token_file), tls_ca, tls_cert,
tls_key, timeout. The environment's names:
  CBR_VAULT_ADDR, CBR_BACKUP_ADDR      host:port of the vault and backup services
  CBR_POLICY_ADDR, CBR_REPLICATION_ADDR
  CBR_TOKEN                            bearer token (JWT) sent with every call
  CBR_TLS_CA                           connect with TLS, trusting this CA file
  CBR_TLS_CERT, CBR_TLS_KEY            client certificate and key, for mutual TLS

"""


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors come out as JSON under --json."""

    def error(self, message: str):
        if "--json" in sys.argv[1:] or "--json" in _ARGV:
            Output(as_json=True).error(f"{self.prog}: {message}", "USAGE", exit_codes.USAGE)
            sys.exit(exit_codes.USAGE)
        super().error(message)


_ARGV: list[str] = []  # the arguments main() was given, for Parser.error


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cbr", description="Command-line client of CBR, the Cloud Backup and Recovery service.",
        epilog=CONVENTIONS_HELP + CONFIG_HELP + exit_codes.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cbr {__version__}")
    _add_global_options(parser, with_defaults=True)
    # The same options are accepted after the command too (`cbr vault list --json`); SUPPRESS keeps a value
    # given before the command from being reset there.
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    _add_global_options(common, with_defaults=False)
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for module in (vault, protectables, backups, backup_files, tasks, policy, replication, audit):
        module.register(groups, common)
    completion.register(groups, common)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON (its shape: conventions, below)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only ids, one a line (no tables, notes or progress bars)")
    parser.add_argument("--profile", metavar="NAME", help="use this profile of the config file (see configuration)")
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g}; a watch lasts as long as its task)")
    parser.add_argument("--env-file", metavar="PATH", help=f"read settings missing from the environment here "
                                                           f"(default: {ENV_FILE}, searched upwards)")
    if with_defaults:
        parser.set_defaults(json=False, quiet=False, profile=None, timeout=None, env_file=None)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    _ARGV[:] = list(argv if argv is not None else sys.argv[1:])
    args = build_parser().parse_args(argv)
    out = Output(as_json=args.json, quiet=args.quiet)
    if args.json and args.quiet:
        out.error("--json and --quiet do not go together", "USAGE", exit_codes.USAGE)
        return exit_codes.USAGE
    try:
        if getattr(args, "offline", False):  # needs no service (`cbr completion`)
            return args.handler(args, None, out) or exit_codes.OK
        config = load_config(os.environ, args.env_file, timeout=args.timeout, profile=args.profile)
        return asyncio.run(run(args, config, out))
    except ConfigError as exc:
        out.error(str(exc), "CONFIG", exit_codes.USAGE)
        return exit_codes.USAGE
    except KeyboardInterrupt:
        out.error("interrupted (any task keeps running; `cbr task watch ID` follows it again)", "INTERRUPTED",
                  exit_codes.INTERRUPTED)
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        # The reader left (`cbr task list | head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OTHER


async def run(args: argparse.Namespace, config: Config, out: Output) -> int:
    try:
        async with CbrClient(config) as client:
            await resolve_args(args, client)
            code = await args.handler(args, client, out)
        return exit_codes.OK if code is None else code
    except grpc.aio.AioRpcError as error:
        code = exit_codes.for_status(error.code())
        cbr_code = cbr_code_of(error)
        out.error(describe(error, args.fields), error.code().name, code, {"cbr_code": cbr_code} if cbr_code else {})
        return code
    except NameNotFoundError as exc:
        out.error(str(exc), "NOT_FOUND", exit_codes.NOT_FOUND, {"kind": exc.ref.kind, "name": exc.ref.text})
        return exit_codes.NOT_FOUND
    except AmbiguousNameError as exc:
        out.error(str(exc), "AMBIGUOUS", exit_codes.AMBIGUOUS, {
            "kind": exc.ref.kind, "name": exc.ref.text,
            "candidates": [{"id": c.object_id, "name": c.name, "kind": c.kind} for c in exc.candidates]})
        return exit_codes.AMBIGUOUS
    except UsageError as exc:
        out.error(str(exc), "USAGE", exit_codes.USAGE)
        return exit_codes.USAGE
    except WatchEndedError as exc:
        out.error(str(exc), "WATCH_ENDED", exit_codes.OTHER)
        return exit_codes.OTHER

"""Argument parsing the commands share: groups and commands, ids, sizes with units, enum names, KEY=VALUE pairs,
times, paging."""
from __future__ import annotations

import argparse
import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from cbr.common.v1 import common_pb2
from cbr_cli.output import enum_choices
from cbr_cli.resolve import Ref, is_uuid


class UsageError(Exception):
    """Arguments that parse but do not make sense together; exits like an argparse error."""


def add_group(groups, name: str, help: str = "", aliases: tuple[str, ...] = ()):
    """`cbr NAME ...`: a group of commands; returns the object to add its commands to. A group that exists
    already (a module adding verbs to `cbr backup`) is returned as it is."""
    existing = getattr(groups, "cbr_groups", None)
    if existing is None:
        existing = groups.cbr_groups = {}
    if name in existing:
        return existing[name]
    group = groups.add_parser(name, aliases=aliases, help=help, description=help)
    _hide_aliases(groups, name, aliases)
    existing[name] = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return existing[name]


def add_command(commands, name: str, handler, common: argparse.ArgumentParser, help: str,
                aliases: tuple[str, ...] = (), fields: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """`cbr GROUP NAME ...`, run by `handler(args, client, out)`; `common` brings --json, --timeout, --env-file.

    `aliases` are old spellings that still work but are not shown; `fields` maps the request fields the service
    may name in a refusal to this command's own flags, where errors.FIELD_FLAGS does not already say it."""
    parser = commands.add_parser(name, aliases=aliases, parents=[common], help=help, description=help)
    _hide_aliases(commands, name, aliases)
    parser.set_defaults(handler=handler, fields=dict(fields or {}))
    return parser


def _hide_aliases(subparsers, name: str, aliases: tuple[str, ...]) -> None:
    if aliases:  # argparse lists aliases as "name (alias)"; the help shows one name per command
        subparsers._choices_actions[-1].metavar = name


def add_hidden(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    """An old spelling of an option: accepted, not shown in --help."""
    parser.add_argument(flag, help=argparse.SUPPRESS, **kwargs)


def object_id(kind: str):
    """An argument type taking the id of a `kind` that has no name (a UUID, as `cbr ... list --json` shows it)."""
    def parse(text: str) -> str:
        if is_uuid(text):
            return text.lower()
        raise argparse.ArgumentTypeError(f"expected {kind} id (a UUID), got {text!r}")
    return parse


def name_or_id(kind: str, noun: str):
    """An argument type taking an object of `kind` by id, name or id prefix: a UUID as it is, anything else a
    Ref that resolve.resolve_args turns into the id before the command runs."""
    def parse(text: str) -> str | Ref:
        if is_uuid(text):
            return text.lower()
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {noun}'s name or id, got an empty string")
        return Ref(kind, text)
    return parse


VAULT_ID = name_or_id("vault", "a vault")
BACKUP_ID = name_or_id("backup", "a backup")
CHECKPOINT_ID = object_id("a checkpoint")  # no call lists checkpoints: by id only
POLICY_ID = name_or_id("policy", "a policy")
TASK_ID = object_id("a task")
DISK_ID = name_or_id("disk", "a disk")
SERVER_ID = name_or_id("server", "a server")
FILE_SYSTEM_ID = name_or_id("file_system", "a file system")
RESOURCE_ID = name_or_id("resource", "a disk, server or file system")  # what a vault protects
REMOTE_VAULT_ID = object_id("a vault")  # a vault of another region: its names are not known here


SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgtp]?)(?:i?b)?", re.IGNORECASE)
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
GIB = UNITS["g"]
SIZE_HELP = "a number with a unit K, M, G, T (powers of 1024: 512M, 10G, 1.5T); a bare number is bytes"


def size(text: str) -> int:
    """'10G' -> 10737418240; '512M', '4096' (bytes), '1.5G', '10GiB', '10GB' (also 1024**3) as well."""
    match = SIZE_RE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} ({SIZE_HELP})")
    try:
        exact = Decimal(match["number"]) * UNITS[match["unit"].lower()]
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if exact != exact.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes")
    return int(exact)


def whole_gib(text: str) -> int:
    """A vault capacity: a size that is a whole, positive number of GiB ('100G', '1T'); returns the GiB."""
    size_bytes = size(text)
    if size_bytes <= 0 or size_bytes % GIB:
        raise argparse.ArgumentTypeError(f"a vault's capacity is a whole number of GiB, e.g. 100G or 1T; "
                                         f"got {text!r}" + (" (a bare number is bytes)" if text.strip().isdigit()
                                                            else ""))
    return size_bytes // GIB


def gib_count(text: str) -> int:
    """The old --size-gb: a bare number of GiB."""
    return whole_gib(f"{text}G" if text.strip().isdigit() else text)


def add_enum(parser: argparse.ArgumentParser, flag: str, enum_type, **kwargs) -> None:
    """An option taking one of the enum's CLI names ('-' or '_' alike); the parsed value is the enum number
    (0 if absent)."""
    choices = enum_choices(enum_type)

    def parse(text: str) -> int:
        key = text.lower().replace("-", "_")
        key = OLD_ENUM_NAMES.get(key, key)
        if key not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return choices[key]
    kwargs.setdefault("default", [] if kwargs.get("action") == "append" else 0)
    parser.add_argument(flag, type=parse, metavar="{" + ",".join(choices) + "}", **kwargs)


OLD_ENUM_NAMES = {"turbo": "file_system"}  # the API enum's name for file systems, still accepted


def tag(text: str) -> common_pb2.Tag:
    """KEY=VALUE (the value may be empty)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return common_pb2.Tag(key=key, value=value)


def server_disks(text: str) -> tuple[str, list[str]]:
    """SERVER_ID=DISK_ID,DISK_ID -> ('SERVER_ID', ['DISK_ID', 'DISK_ID'])."""
    key, sep, rest = text.partition("=")
    items = [item for item in rest.split(",") if item]
    if not sep or not key or not items:
        raise argparse.ArgumentTypeError(f"expected SERVER_ID=DISK_ID[,DISK_ID...], got {text!r}")
    return SERVER_ID(key), [DISK_ID(item) for item in items]


def backup_to_disk(text: str) -> tuple[str, str]:
    """CHILD_BACKUP_ID=DISK_ID -> ('CHILD_BACKUP_ID', 'DISK_ID')."""
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected CHILD_BACKUP_ID=DISK_ID, got {text!r}")
    return BACKUP_ID(left), DISK_ID(right)


def timestamp(text: str) -> Timestamp:
    """ISO 8601, e.g. 2024-05-01 or 2024-05-01T10:00:00Z; without an offset it is local time."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(dt.timezone.utc))
    return stamp


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=count, default=0, help="at most this many (default: the service's, 1000)")
    parser.add_argument("--offset", type=count, default=0, help="skip this many first")


def page(args: argparse.Namespace) -> common_pb2.PageRequest:
    return common_pb2.PageRequest(limit=args.limit, offset=args.offset)


def add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="watch the task with a progress bar until it ends; exit 11 unless it succeeds")

"""Argument parsing the commands share: groups and commands, sizes with suffixes, enum names, KEY=VALUE pairs,
times, paging."""
from __future__ import annotations

import argparse
import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from google.protobuf.timestamp_pb2 import Timestamp

from cbr.common.v1 import common_pb2
from cbr_common.proto_enums import enum_value



class UsageError(Exception):
    """Arguments that parse but do not make sense together; exits like an argparse error."""


def add_group(groups, name: str, help: str):
    """`cbr NAME ...`: a group of commands; returns the object to add its commands to."""
    group = groups.add_parser(name, help=help, description=help)
    return group.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(commands, name: str, handler, common: argparse.ArgumentParser, help: str) -> argparse.ArgumentParser:
    """`cbr GROUP NAME ...`, run by `handler(args, client, out)`; `common` brings --json, --timeout, --env-file."""
    parser = commands.add_parser(name, parents=[common], help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgtp]?)(?:i?b)?", re.IGNORECASE)
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
SIZE_HELP = "bytes, or with a suffix K, M, G, T (powers of 1024): 512M, 10G, 1.5T"


def size(text: str) -> int:
    """'10G' -> 10737418240; '512M', '4096', '1.5G', '10GiB' as well."""
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


def enum_names(enum_type) -> list[str]:
    """The lower-case names of a protobuf enum without its prefix and its _UNSPECIFIED value."""
    prefix = enum_type.Name(0)[: -len("UNSPECIFIED")]
    return [name[len(prefix):].lower() for name in enum_type.keys() if not name.endswith("_UNSPECIFIED")]


def add_enum(parser: argparse.ArgumentParser, flag: str, enum_type, **kwargs) -> None:
    """An option taking one of the enum's lower-case names; the parsed value is the enum number (0 if absent)."""
    names = enum_names(enum_type)

    def parse(text: str) -> int:
        if text.lower() not in names:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(names)})")
        return enum_value(enum_type, text.lower())
    kwargs.setdefault("default", [] if kwargs.get("action") == "append" else 0)
    parser.add_argument(flag, type=parse, metavar="{" + ",".join(names) + "}", **kwargs)



def tag(text: str) -> common_pb2.Tag:
    """KEY=VALUE (the value may be empty)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return common_pb2.Tag(key=key, value=value)


def id_with_list(text: str) -> tuple[str, list[str]]:
    """ID=A,B,C -> ('ID', ['A', 'B', 'C'])."""
    key, sep, rest = text.partition("=")
    items = [item for item in rest.split(",") if item]
    if not sep or not key or not items:
        raise argparse.ArgumentTypeError(f"expected ID=ID[,ID...], got {text!r}")
    return key, items


def id_pair(text: str) -> tuple[str, str]:
    """A=B -> ('A', 'B')."""
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected ID=ID, got {text!r}")
    return left, right


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

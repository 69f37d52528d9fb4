"""What the commands print: rich tables by default (a key/value table for one object), JSON with --json.

JSON has one shape per kind of result, whatever the count: a list is `{"items": [...], "count": N}` (N: every
match, paging aside), one thing is the bare object; both in protobuf's JSON mapping with the .proto field names.
An error is one line on stderr: `error: ...`, or under --json `{"error": {"code", "message", "exit_code",
"details"}}`. With --quiet only ids are printed, one a line. List tables fit TABLE_WIDTH columns: ids are short
(their first 8 characters, which every command takes back) and long names end in an ellipsis."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cbr_cli.resolve import short_id

UNPIPED_WIDTH = 1000  # piped output is not wrapped: a table row stays one line for grep and awk
TABLE_WIDTH = 120     # a list table never takes more columns than this, piped or not
ID_SUFFIX = "_id"


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=UNPIPED_WIDTH)
    return console


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Message], str]
    is_id: bool = False    # shown short (short_id): the first 8 characters, which resolve back
    is_name: bool = False  # the column that gives way (ellipsis) when the table would be too wide


class Output:
    """Prints protobuf messages as tables, JSON or bare ids on stdout; notes and errors go to stderr."""

    def __init__(self, as_json: bool, stdout: Console | None = None, stderr: Console | None = None,
                 quiet: bool = False):
        self.as_json = as_json
        self.quiet = quiet and not as_json
        self.stdout = stdout or make_console()
        self.stderr = stderr or make_console(stderr=True)

    def json(self, value: Message | dict) -> None:
        print(json.dumps(message_dict(value) if isinstance(value, Message) else value, indent=2), flush=True)

    def ids(self, ids: Iterable[str]) -> None:
        for object_id in ids:
            if object_id:
                print(object_id, flush=True)

    def one(self, message: Message, hide: Sequence[str] = ()) -> None:
        """One object: its fields as key/value rows (but those in `hide`), then a table for each repeated
        message field."""
        if self.as_json:
            return self.json(message)
        if self.quiet:
            return self.ids([primary_id(message)])
        self.stdout.print(key_value_table(message, hide))
        for field in message.DESCRIPTOR.fields:
            if _is_nested_list(field):
                items = list(getattr(message, field.name))
                if items:
                    self.stdout.print()
                    self.stdout.print(generic_table(items, title=field.name.replace("_", " ")))

    @property
    def table_width(self) -> int:
        return min(self.stdout.width, TABLE_WIDTH)

    def many(self, items: Sequence[Message], columns: Sequence[Column], total: int | None = None) -> None:
        """A list: `{"items": [...], "count": total}`, or a table of `columns` with a count line.

        `total` is what the service counted ignoring paging; None means the items are all there is."""
        if self.as_json:
            return self.json({"items": [message_dict(item) for item in items],
                              "count": len(items) if total is None else total})
        if self.quiet:
            return self.ids(primary_id(item) for item in items)
        table = new_table()
        for column in columns:
            table.add_column(column.header, no_wrap=not column.is_name, overflow="ellipsis",
                             min_width=len(column.header) if column.is_name else None)
        for item in items:
            table.add_row(*(cell(column, item) for column in columns))
        self.stdout.print(table, width=self.table_width)
        if total is not None:
            shown = len(items)
            self.stdout.print(Text(f"{total} in all" if total == shown else f"{shown} of {total}", style="dim"))

    def done(self, message: Message, text: str) -> None:
        """A call with little to show: the response as JSON, its ids, or a short line."""
        if self.as_json:
            return self.json(message)
        if self.quiet:
            return self.ids(response_ids(message))
        self.stdout.print(Text(text))

    def note(self, text: str) -> None:
        """For a person, on stderr; not under --quiet."""
        if not self.quiet:
            self.stderr.print(Text(text))

    def error(self, text: str, code: str = "ERROR", exit_code: int | None = None,
              details: dict | None = None) -> None:
        """One line on stderr, never wrapped: `error: ...`, or under --json
        {"error": {"code": ..., "message": ..., "exit_code": ..., "details": {...}}}."""
        message = " ".join(text.split())
        if self.as_json:
            line = json.dumps({"error": {"code": code, "message": message, "exit_code": exit_code,
                                         "details": details or {}}})
            print(line, file=sys.stderr, flush=True)
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)


def cell(column: Column, item: Message) -> Text:
    value = column.value(item) or "-"
    if column.is_id:
        value = ", ".join(short_id(part) for part in value.split(", "))
    return Text(value, no_wrap=True, overflow="ellipsis")


def primary_id(message: Message) -> str:
    """The message's own id: `<message name>_id` (Vault.vault_id), else its first `..._id` string field."""
    own = re.sub(r"(?<!^)(?=[A-Z])", "_", message.DESCRIPTOR.name).lower() + ID_SUFFIX
    fields = message.DESCRIPTOR.fields_by_name
    if own in fields:
        return getattr(message, own)
    for field in message.DESCRIPTOR.fields:
        if field.name.endswith(ID_SUFFIX) and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            return getattr(message, field.name)
    return ""


def response_ids(message: Message) -> list[str]:
    """The ids a call answered with: a started task's, else those of its `..._ids` lists, else its own."""
    fields = message.DESCRIPTOR.fields_by_name
    if "task_id" in fields:
        return [message.task_id]
    lists = [f for f in message.DESCRIPTOR.fields if f.name.endswith("_ids") and f.is_repeated]
    if lists:
        return [i for f in lists for i in getattr(message, f.name)]
    return [primary_id(message)]


def message_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def new_table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 header_style="bold", padding=(0, 1, 0, 0))


def key_value_table(message: Message, hide: Sequence[str] = ()) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for field in message.DESCRIPTOR.fields:
        if _is_nested_list(field) or field.name in hide:
            continue  # a table of its own, or left out
        text = field_text(message, field, exact=True)
        if text:
            table.add_row(field.name, Text(text))
    return table


def generic_table(items: Sequence[Message], title: str | None = None) -> Table:
    """Every field that is set in some item, one column each."""
    fields = [f for f in items[0].DESCRIPTOR.fields if any(field_text(item, f) for item in items)]
    table = new_table(title)
    for field in fields:
        header = field.name.removesuffix("_bytes").upper().replace("_", " ")
        table.add_column(header, no_wrap=field.name.endswith(ID_SUFFIX))
    for item in items:
        table.add_row(*(Text(field_text(item, field) or "-") for field in fields))
    return table


def field_text(message: Message, field: FieldDescriptor, exact: bool = False) -> str:
    """A field as a person reads it; '' when it is empty. `exact` adds the byte count to human sizes."""
    value = getattr(message, field.name)
    if _is_map(field):
        return ", ".join(f"{key}={value[key]}" for key in sorted(value))
    if _is_repeated(field):
        if field.message_type is not None:
            if field.message_type.full_name == "cbr.common.v1.Tag":
                return ", ".join(f"{t.key}={t.value}" for t in value)
            return f"{len(value)}" if value else ""
        return ", ".join(enum_text(field, v) if field.enum_type else str(v) for v in value)
    if field.message_type is not None:
        if not message.HasField(field.name):
            return ""
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return time_text(value)
        if field.message_type.full_name == "cbr.backup.v1.TaskError":
            return f"{value.code}: {value.message}" if value.code else value.message
        return json.dumps(message_dict(value))
    if field.enum_type is not None:
        return enum_text(field, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()  # digests
    if isinstance(value, int):
        return number_text(field.name, value, exact)
    return str(value)


def number_text(name: str, value: int, exact: bool = False) -> str:
    if name.endswith("_bytes") or name.startswith("bytes_"):
        return bytes_text(value) + (f" ({value} bytes)" if exact and value >= 1024 else "")
    if name == "size_gb":
        return f"{value} GiB"
    if name in ("progress", "threshold"):
        return f"{value}%"
    return str(value)


# Where the CLI's name for an enum value is not the API's: one name per resource type across the commands.
CLI_ENUM_NAMES = {"OBJECT_TYPE_TURBO": "file_system"}


def cli_enum_name(enum_descriptor, number: int) -> str:
    """'OBJECT_TYPE_DISK' -> 'disk'; '' for _UNSPECIFIED; the number itself when the CLI does not know it."""
    values = enum_descriptor.values_by_number
    if number not in values:
        return str(number)
    name = values[number].name
    if name.endswith("_UNSPECIFIED"):
        return ""
    prefix = values[0].name[: -len("UNSPECIFIED")]
    return CLI_ENUM_NAMES.get(name, name[len(prefix):].lower())


def enum_choices(enum_type) -> dict[str, int]:
    """The names the CLI takes for an enum's values (all but _UNSPECIFIED), to their numbers."""
    return {cli_enum_name(enum_type.DESCRIPTOR, v.number): v.number for v in enum_type.DESCRIPTOR.values
            if not v.name.endswith("_UNSPECIFIED")}


def enum_text(field: FieldDescriptor, value: int) -> str:
    return cli_enum_name(field.enum_type, value)


def enum_of(message: Message, field_name: str) -> str:
    return enum_text(message.DESCRIPTOR.fields_by_name[field_name], getattr(message, field_name))


def bytes_text(value: int) -> str:
    if value < 1024:
        return f"{value} B"
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        amount /= 1024
        if amount < 1024 or unit == "PiB":
            return f"{amount:.1f} {unit}"
    raise AssertionError("unreachable")


def time_text(stamp, minutes: bool = False) -> str:
    """Local time; to the minute in list tables (`minutes`), where columns are dear."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    when = dt.datetime.fromtimestamp(stamp.seconds, tz=dt.timezone.utc).astimezone()
    return when.strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%d %H:%M:%S")


def joined(values: Iterable[str]) -> str:
    return ", ".join(values)


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _is_nested_list(field: FieldDescriptor) -> bool:
    """A repeated message field other than tags and maps: shown as a table under the object."""
    return (_is_repeated(field) and field.message_type is not None and not _is_map(field)
            and field.message_type.full_name != "cbr.common.v1.Tag")


def _is_map(field: FieldDescriptor) -> bool:
    return (_is_repeated(field) and field.message_type is not None
            and field.message_type.GetOptions().map_entry)

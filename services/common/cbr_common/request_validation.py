"""The checks every request passes at the gRPC edge, whatever its RPC, driven by the message's descriptor.

- Strings, wherever they sit (nested messages, repeated fields, map keys and values): at most MAX_STRING_CHARS
  characters and no control characters (Unicode category Cc: U+0000..U+001F, U+007F..U+009F) except tab, line
  feed and carriage return, which free text such as a description may hold. Stricter rules for names, ids and
  tags stay with each service's domain rules.
- google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, nanos 0..999,999,999 (the range
  the type itself defines).
- Enums: only numbers the enum defines (proto3 keeps unknown numbers, so a caller can send any).
- A body that does not parse as the request type is refused the same way (see `lenient_deserializer`).

A refusal names the field by its path (`resources[2].name`, `extra_info['k']`) and never repeats the value."""
from __future__ import annotations

import functools
import re
from typing import Any, Callable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cbr_common.echo import short
from cbr_common.errors import InvalidArgumentError

MAX_STRING_CHARS = 16_384  # far above any name, description, pattern or id CBR takes
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999
TIMESTAMP_TYPE = "google.protobuf.Timestamp"

_RULED_TYPES = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_MESSAGE)
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class InvalidRequestError(InvalidArgumentError):
    """A request field breaks a rule every request follows, or the body does not parse; nothing was written."""
    cbr_code = "BackupService.6400"


class UndecodableRequest:
    """What a lenient deserializer hands on in place of a request whose body does not parse."""

    def __init__(self, error: Exception):
        self.error = error


def lenient_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserialize`, but a body that does not parse becomes an UndecodableRequest instead of an exception
    (grpc would answer UNKNOWN and log an error line with a traceback for each such call). None (raw bytes)
    stays None."""
    if deserialize is None:
        return None

    def parse(body: bytes) -> Any:
        try:
            return deserialize(body)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything a parser raises on garbage
            return UndecodableRequest(exc)
    return parse


def check_request(request: Any, method: str = "") -> None:
    """Raises InvalidRequestError if `request` did not parse or breaks a rule above; returns None otherwise."""
    if isinstance(request, UndecodableRequest):
        what = f"{method} request" if method else "request"
        raise InvalidRequestError(f"the body of this {what} is not a valid protobuf message of its type")
    if isinstance(request, Message):
        _check_message(request, "")


@functools.cache
def _ruled_fields(descriptor) -> tuple[FieldDescriptor, ...]:
    """The fields a rule applies to (strings, enums, messages). Bytes and numbers are never read: reading a bytes
    field copies it out of the message, which for a replica's chunk stream was every payload copied once more."""
    return tuple(f for f in descriptor.fields if f.type in _RULED_TYPES)


def _check_message(message: Message, path: str) -> None:
    if message.DESCRIPTOR.full_name == TIMESTAMP_TYPE:
        _check_timestamp(message, path)
        return
    for field in _ruled_fields(message.DESCRIPTOR):
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated and not message.HasField(field.name):
            continue  # an unset message: reading it would make an empty one to check
        value = getattr(message, field.name)
        where = f"{path}.{field.name}" if path else field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            for key, item in value.items():
                _check_value(key_field, key, f"{where} (a key)")
                _check_value(value_field, item, f"{where}[{short(key)}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{where}[{index}]")
        else:
            _check_value(field, value, where)


def _check_value(field: FieldDescriptor, value: Any, where: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        _check_string(value, where)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        if value not in field.enum_type.values_by_number:
            raise InvalidRequestError(f"{where}: {value} is not a value of {field.enum_type.name}")
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, where)


def _check_string(value: str, where: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise InvalidRequestError(f"{where}: {len(value)} characters, at most {MAX_STRING_CHARS} allowed")
    control = _FORBIDDEN_CONTROL.search(value)
    if control:
        raise InvalidRequestError(
            f"{where}: control character U+{ord(control.group()):04X} at position {control.start()} "
            "(only tab, line feed and carriage return are allowed)")


def _check_timestamp(stamp: Message, where: str) -> None:
    if not MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidRequestError(f"{where}: seconds must fall within 0001-01-01 and 9999-12-31")
    if not 0 <= stamp.nanos <= MAX_NANOS:
        raise InvalidRequestError(f"{where}: nanos must be 0..{MAX_NANOS}")

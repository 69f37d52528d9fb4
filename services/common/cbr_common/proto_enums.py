"""Protobuf enum values <-> the lower-case names the domain uses ('OBJECT_TYPE_DISK' <-> 'disk')."""
from __future__ import annotations


def enum_name(enum_type, value: int, unspecified: str = "") -> str:
    """The domain name of `value`; unknown numbers give 'unknown' so validation rejects them."""
    prefix = _prefix(enum_type)
    try:
        full = enum_type.Name(value)
    except ValueError:
        return "unknown"
    return unspecified if full.endswith("_UNSPECIFIED") else full[len(prefix):].lower()


def enum_value(enum_type, name: str) -> int:
    return enum_type.Value(_prefix(enum_type) + name.upper()) if name else 0


def _prefix(enum_type) -> str:
    unspecified = enum_type.Name(0)
    return unspecified[: -len("UNSPECIFIED")]

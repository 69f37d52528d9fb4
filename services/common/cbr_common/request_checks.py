"""Checks every service applies to request fields alike: UUID ids, lists of them, and offset paging.

Each service passes its own error class, so the caller still gets that service's CBR code."""
from __future__ import annotations

import uuid

from cbr_common.echo import short

MAX_LIST_LIMIT = 1000


def canonical_id(value, what: str, error: type[Exception]) -> str:
    """A UUID in canonical form (any case), returned in lower case; anything else raises `error`."""
    try:
        if str(uuid.UUID(value)) == value.lower():
            return value.lower()
    except (ValueError, AttributeError, TypeError):
        pass
    raise error(f"{what} must be a UUID, got {short(value)}")


def id_list(values, what: str, error: type[Exception], limit: int = MAX_LIST_LIMIT) -> list[str]:
    """Canonical UUIDs, at most `limit` of them: a filter or batch longer than a page is refused up front rather
    than looked up one by one or sent to the database as one parameter per id (which stops at 65,535)."""
    if len(values) > limit:
        raise error(f"at most {limit} of {what} in one request, got {len(values)}")
    return [canonical_id(v, what, error) for v in values]


def page_bounds(limit: int, offset: int, error: type[Exception]) -> tuple[int, int]:
    """limit 1..1000 (0 means the default, 1000) and offset >= 0, as CBR's list calls take them."""
    if limit < 0 or limit > MAX_LIST_LIMIT:
        raise error(f"limit must be 1..{MAX_LIST_LIMIT} (0 for the default)")
    if offset < 0:
        raise error("offset must not be negative")
    return (limit or MAX_LIST_LIMIT), offset

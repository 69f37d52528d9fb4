"""Policy time zones: CBR's fixed offsets ("UTC+08:00", "UTC-03:30", "UTC") and IANA names ("Europe/Berlin")."""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from cbr_common.echo import short
from cbr_policy.domain import errors

OFFSET_RE = re.compile(r"UTC(?:([+-])(\d{2}):(\d{2}))?")
MAX_OFFSET = dt.timedelta(hours=14)


def parse_timezone(name: str) -> dt.tzinfo:
    """The zone a policy's schedule and GFS periods are read in; raises InvalidTimezoneError."""
    match = OFFSET_RE.fullmatch(name or "")
    if match:
        if not match.group(1):
            return dt.timezone.utc
        sign = 1 if match.group(1) == "+" else -1
        hours, minutes = int(match.group(2)), int(match.group(3))
        offset = dt.timedelta(hours=hours, minutes=minutes)
        if minutes >= 60 or offset > MAX_OFFSET:
            raise errors.InvalidTimezoneError(f"time zone offset out of range: {short(name)}")
        return dt.timezone(sign * offset, name)
    if name and re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,2}", name):
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    raise errors.InvalidTimezoneError(
        f"timezone must look like UTC+08:00 (or UTC, or an IANA name like Europe/Berlin), got {short(name)}")

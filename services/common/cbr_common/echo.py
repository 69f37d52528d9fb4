"""How much of a caller's input a message or log line may repeat: a short prefix, never the whole value."""
from __future__ import annotations

SHORT_CHARS = 40        # of one value quoted in a message
MAX_MESSAGE_CHARS = 300  # of a whole status message or logged detail
ELLIPSIS = "…"


def short(value: object, limit: int = SHORT_CHARS) -> str:
    """`value` quoted (repr, so control characters show escaped), cut to its first `limit` characters."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + ELLIPSIS


def capped(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` whole if it is short enough, else its first characters ending with an ellipsis."""
    return message if len(message) <= limit else message[:limit - len(ELLIPSIS)] + ELLIPSIS

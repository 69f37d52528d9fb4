"""The scheduler's and retention's background loop: one pass every interval; a failed pass is logged and the
next one tries again (the database or a peer may be away for a while)."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable


async def every(interval: float, one_pass: Callable[[], Awaitable[object]], log: logging.Logger, what: str) -> None:
    while True:
        try:
            await one_pass()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; trying again", what)
        await asyncio.sleep(interval)

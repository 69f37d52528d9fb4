"""Reading a process's Prometheus /metrics over HTTP, as Prometheus does."""
from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One scrape: sample values by name and labels."""

    def __init__(self, text: str):
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it is absent (a counter no event moved yet)."""
        found = [s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v
                                                                          for k, v in labels.items())]
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} series"
        return found[0] if found else 0.0

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


async def scrape(address: str) -> Scrape:
    """GET http://<address>/metrics (on a thread: the server may live in this very event loop)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            assert reply.status == 200
            assert reply.headers.get_content_type() == "text/plain"
            return reply.read().decode()
    return Scrape(await asyncio.to_thread(get))

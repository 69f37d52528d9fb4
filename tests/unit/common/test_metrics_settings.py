"""CBR_METRICS_ADDR: malformed, or a port another program holds, stops the start with the setting's name."""
from __future__ import annotations

import socket
import types

import pytest

from cbr_common import metrics
from cbr_common.settings import Settings, SettingsError

BASE = {"CBR_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1/x", "CBR_NATS_URL": "nats://127.0.0.1:4222",
        "CBR_JWT_SECRET": "s"}


def test_the_address_is_host_and_port_and_off_when_empty():
    assert Settings.from_env("vault", BASE).metrics_addr == ""
    assert Settings.from_env("vault", {**BASE, "CBR_METRICS_ADDR": "0.0.0.0:9100"}).metrics_addr == "0.0.0.0:9100"
    for bad in ("localhost", "127.0.0.1:http"):
        with pytest.raises(SettingsError, match="CBR_METRICS_ADDR"):
            Settings.from_env("vault", {**BASE, "CBR_METRICS_ADDR": bad})
    with pytest.raises(SettingsError, match="CBR_METRICS_SAMPLE_SECONDS"):
        Settings.from_env("vault", {**BASE, "CBR_METRICS_SAMPLE_SECONDS": "0"})
    assert metrics.export(Settings.from_env("vault", BASE)) is None


def test_a_taken_port_is_a_settings_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(SettingsError, match=f"CBR_METRICS_ADDR {taken}"):
            metrics.export(types.SimpleNamespace(metrics_addr=taken, metrics_sample_seconds=1.0))

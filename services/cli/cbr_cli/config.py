"""Where the services are and who is calling: the environment, backed by a `.run/cbr.env` file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_FILE = Path(".run") / "cbr.env"
DEFAULT_TIMEOUT = 30.0
SERVICES = ("vault", "backup", "policy", "replication")


class ConfigError(Exception):
    """The configuration is missing or unreadable; the message names what to set."""


@dataclass(frozen=True)
class Config:
    addresses: dict[str, str] = field(default_factory=dict)  # service name -> host:port
    token: str = ""
    tls_ca: str = ""     # a CA file: connect with TLS and trust it
    tls_cert: str = ""   # with tls_key: present a client certificate (mutual TLS)
    tls_key: str = ""
    timeout: float = DEFAULT_TIMEOUT
    source: str = "environment"  # for messages: where values not in the environment came from

    def address(self, service: str) -> str:
        address = self.addresses.get(service, "")
        if not address:
            raise ConfigError(f"CBR_{service.upper()}_ADDR is not set in the {self.source} (export it, run "
                              f"`make up`, which writes {ENV_FILE}, or pass --env-file)")
        return address


def load_config(environ: Mapping[str, str], env_file: str | None = None, cwd: Path | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Config:
    """Each value from the environment if set there, else from the env file (given, or found from `cwd` up)."""
    path = Path(env_file) if env_file else find_env_file(cwd or Path.cwd())
    file_values: dict[str, str] = {}
    if path is not None:
        try:
            file_values = parse_env_file(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None

    def value(key: str) -> str:
        return environ.get(key) or file_values.get(key, "")

    if (value("CBR_TLS_CERT") == "") != (value("CBR_TLS_KEY") == ""):
        raise ConfigError("set both CBR_TLS_CERT and CBR_TLS_KEY for mutual TLS, or neither")
    if value("CBR_TLS_CERT") and not value("CBR_TLS_CA"):
        raise ConfigError("CBR_TLS_CERT and CBR_TLS_KEY need CBR_TLS_CA")
    return Config(addresses={name: value(f"CBR_{name.upper()}_ADDR") for name in SERVICES},
                  token=value("CBR_TOKEN"), tls_ca=value("CBR_TLS_CA"), tls_cert=value("CBR_TLS_CERT"),
                  tls_key=value("CBR_TLS_KEY"), timeout=timeout,
                  source=f"environment and {path}" if path else "environment")


def find_env_file(start: Path) -> Path | None:
    """`.run/cbr.env` in `start` or the nearest folder above it, as `make up` writes it at the repository root."""
    for folder in (start, *start.parents):
        candidate = folder / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as a shell would read them with `set -a; . FILE`: comments, `export`, simple quotes."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, raw = line.partition("=")
        if not sep or not key.strip().isidentifier():
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        values[key.strip()] = raw
    return values

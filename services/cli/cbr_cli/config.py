"""Where the services are and who is calling, from layers of settings (highest first):

1. the profile named by `--profile` (the command line is the strongest statement),
2. the environment: CBR_VAULT_ADDR, CBR_BACKUP_ADDR, CBR_POLICY_ADDR, CBR_REPLICATION_ADDR, CBR_TOKEN, CBR_TLS_*,
3. the env file given by `--env-file`,
4. the profile named by CBR_PROFILE,
5. `.run/cbr.env` in the current folder or the nearest one above it (what `make up` writes),
6. the `[default]` profile.

Each setting comes from the highest layer that has it. Profiles live in an INI file like the AWS CLI's
(CBR_CONFIG_FILE, else $XDG_CONFIG_HOME/cbr/config, else ~/.config/cbr/config): sections `[default]` and
`[profile NAME]`, keys as in PROFILE_KEYS; relative file paths are read from the config file's folder."""
from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_FILE = Path(".run") / "cbr.env"
DEFAULT_TIMEOUT = 30.0
SERVICES = ("vault", "backup", "policy", "replication")
# Profile key -> the environment variable it stands for.
PROFILE_KEYS = {**{f"{name}_endpoint": f"CBR_{name.upper()}_ADDR" for name in SERVICES},
                "token": "CBR_TOKEN", "tls_ca": "CBR_TLS_CA", "tls_cert": "CBR_TLS_CERT", "tls_key": "CBR_TLS_KEY"}
PATH_KEYS = ("tls_ca", "tls_cert", "tls_key", "token_file")
SETTINGS = tuple(PROFILE_KEYS.values())


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
    source: str = "environment"  # for messages: where the settings were looked for

    def address(self, service: str) -> str:
        address = self.addresses.get(service, "")
        if not address:
            raise ConfigError(f"CBR_{service.upper()}_ADDR is not set in the {self.source} (export it, run "
                              f"`make up`, which writes {ENV_FILE}, pass --env-file, or set {service}_endpoint "
                              f"in a profile)")
        return address


def config_file_path(environ: Mapping[str, str]) -> Path:
    if environ.get("CBR_CONFIG_FILE"):
        return Path(environ["CBR_CONFIG_FILE"]).expanduser()
    base = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "cbr" / "config"


def load_config(environ: Mapping[str, str], env_file: str | None = None, cwd: Path | None = None,
                timeout: float | None = None, profile: str | None = None) -> Config:
    """The settings from the layers in the module's docstring; a profile asked for by name must exist."""
    profiles_path = config_file_path(environ)
    profiles = read_profiles(profiles_path, must_exist=bool(environ.get("CBR_CONFIG_FILE")))
    layers: list[tuple[str, dict[str, str]]] = []
    if profile:
        layers.append((f"profile {profile!r} (--profile)", profile_settings(profiles, profile, profiles_path)))
    layers.append(("environment", {k: environ[k] for k in SETTINGS if environ.get(k)}))
    if env_file:
        layers.append((f"env file {env_file}", _read_env_file(Path(env_file))))
    if environ.get("CBR_PROFILE"):
        name = environ["CBR_PROFILE"]
        layers.append((f"profile {name!r} (CBR_PROFILE)", profile_settings(profiles, name, profiles_path)))
    found = None if env_file else find_env_file(cwd or Path.cwd())
    if found is not None:
        layers.append((f"env file {found}", _read_env_file(found)))
    if "default" in profiles:
        layers.append(("profile 'default'", profile_settings(profiles, "default", profiles_path)))

    def value(key: str) -> str:
        return next((values[key] for _, values in layers if values.get(key)), "")

    if (value("CBR_TLS_CERT") == "") != (value("CBR_TLS_KEY") == ""):
        raise ConfigError("set both CBR_TLS_CERT and CBR_TLS_KEY (tls_cert and tls_key) for mutual TLS, or neither")
    if value("CBR_TLS_CERT") and not value("CBR_TLS_CA"):
        raise ConfigError("CBR_TLS_CERT and CBR_TLS_KEY need CBR_TLS_CA (tls_ca)")
    return Config(addresses={name: value(f"CBR_{name.upper()}_ADDR") for name in SERVICES},
                  token=value("CBR_TOKEN"), tls_ca=value("CBR_TLS_CA"), tls_cert=value("CBR_TLS_CERT"),
                  tls_key=value("CBR_TLS_KEY"), timeout=timeout or _timeout(layers),
                  source=", ".join(name for name, _ in layers))


def _timeout(layers) -> float:
    for name, values in layers:
        if values.get("timeout"):
            try:
                seconds = float(values["timeout"])
            except ValueError:
                seconds = 0.0
            if seconds <= 0:
                raise ConfigError(f"timeout in the {name} must be a positive number of seconds")
            return seconds
    return DEFAULT_TIMEOUT


def read_profiles(path: Path, must_exist: bool = False) -> dict[str, dict[str, str]]:
    """Profile name -> its keys, from `[default]` and `[profile NAME]` sections; {} when there is no file."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        text = path.read_text()
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config file {path} (CBR_CONFIG_FILE) does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ConfigError(f"config file {path} does not parse: {' '.join(str(exc).split())}") from None
    profiles = {}
    for section in parser.sections():
        name = "default" if section == "default" else section.removeprefix("profile ").strip()
        if section != "default" and not section.startswith("profile "):
            raise ConfigError(f"config file {path}: section [{section}] should be [default] or [profile NAME]")
        unknown = set(parser[section]) - set(PROFILE_KEYS) - {"token_file", "timeout"}
        if unknown:
            raise ConfigError(f"config file {path}: [{section}] has unknown key {sorted(unknown)[0]!r} (keys: "
                              f"{', '.join([*PROFILE_KEYS, 'token_file', 'timeout'])})")
        profiles[name] = dict(parser[section])
    return profiles


def profile_settings(profiles: dict[str, dict[str, str]], name: str, path: Path) -> dict[str, str]:
    """A profile's keys as the environment variables they stand for; file paths made absolute."""
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no profile {name!r} in {path} (profiles there: {known})")
    keys = dict(profiles[name])
    for key in PATH_KEYS:
        if keys.get(key):
            keys[key] = str((path.parent / Path(keys[key]).expanduser()).resolve())
    if keys.get("token_file") and not keys.get("token"):
        try:
            keys["token"] = Path(keys["token_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token_file {keys['token_file']} of profile {name!r}: "
                              f"{exc.strerror}") from None
    settings = {env: keys[key] for key, env in PROFILE_KEYS.items() if keys.get(key)}
    if keys.get("timeout"):
        settings["timeout"] = keys["timeout"]
    return settings


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        return {k: v for k, v in parse_env_file(path.read_text()).items() if k in SETTINGS and v}
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None


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

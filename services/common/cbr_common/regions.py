"""The region directory: which peer regions this region replicates to, and how to reach them.

Read from the JSON file CBR_REGIONS_FILE names (see services/backup/DESIGN.md section 17):

    {"dev_plaintext": false,
     "peers": [{"name": "region-b", "transfer_addr": "b.example:7443", "tls_ca": "/etc/cbr/b-ca.pem",
                "credential_file": "/etc/cbr/b.token", "rate_limit_mbps": 100, "max_concurrent": 2}]}

`transfer_addr` is the peer's RegionTransferService (its backup service); `credential_file` holds the bearer token
that peer accepts from this region (a `region_peer` token signed by the peer). A peer without `tls_ca` is reached in
plaintext, which only a directory with `"dev_plaintext": true` allows: a dev switch, never for a real deployment.
`rate_limit_mbps` (optional, MB/s, 0 = none) caps what all replications to that peer send together;
`max_concurrent` (optional, default 2) is how many replications run to it at once across the region's workers.
Every mistake is a SettingsError naming the file and the entry, so a service refuses to start on it."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from cbr_common.settings import SettingsError

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # what CBR_REGION may be: a DNS label
TOP_FIELDS = {"dev_plaintext", "peers"}
TEXT_FIELDS = ("name", "transfer_addr", "tls_ca", "credential_file")
PEER_FIELDS = {*TEXT_FIELDS, "rate_limit_mbps", "max_concurrent"}
DEFAULT_MAX_CONCURRENT = 2
REQUIRED_PEER_FIELDS = ("name", "transfer_addr", "credential_file")


@dataclass(frozen=True)
class Peer:
    name: str
    transfer_addr: str    # host:port of the peer's RegionTransferService
    tls_ca: str           # PEM file of the CA that signed the peer's certificate; "" only with dev_plaintext
    credential_file: str  # the token the peer accepts from this region
    rate_limit_mbps: float = 0.0  # MB/s (10^6 bytes) of chunk payload all replications to it share; 0: none
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # replications running to it at once, across the workers

    @property
    def plaintext(self) -> bool:
        return not self.tls_ca


@dataclass(frozen=True)
class RegionDirectory:
    local: str                # this region's name (CBR_REGION)
    peers: tuple[Peer, ...]   # sorted by name
    dev_plaintext: bool = False

    def peer(self, name: str) -> Peer | None:
        return next((peer for peer in self.peers if peer.name == name), None)

    @property
    def destinations(self) -> list[str]:
        return [peer.name for peer in self.peers]


def parse_regions(text: str, local: str, source: str = "CBR_REGIONS_FILE") -> RegionDirectory:
    """The directory in `text` for the region named `local`; `source` names the file in errors."""
    def bad(message: str) -> SettingsError:
        return SettingsError(f"{source}: {message}")

    if not NAME.match(local):
        raise bad(f"CBR_REGION {local!r} is not a region name (lower-case letters, digits and '-', at most 63)")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise bad(f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise bad("must be a JSON object with a \"peers\" list")
    unknown = sorted(set(raw) - TOP_FIELDS)
    if unknown:
        raise bad(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                  f"(known: {', '.join(sorted(TOP_FIELDS))})")
    dev_plaintext = raw.get("dev_plaintext", False)
    if not isinstance(dev_plaintext, bool):
        raise bad("dev_plaintext must be true or false")
    entries = raw.get("peers", [])
    if not isinstance(entries, list):
        raise bad("peers must be a list")
    peers: dict[str, Peer] = {}
    for index, entry in enumerate(entries):
        peer = _peer(entry, f"peers[{index}]", bad)
        if peer.name == local:
            raise bad(f"peers[{index}] is {local!r}, this region itself (CBR_REGION): a region is not its own peer")
        if peer.name in peers:
            raise bad(f"peers[{index}]: region {peer.name!r} is listed twice")
        if peer.plaintext and not dev_plaintext:
            raise bad(f"peers[{index}] ({peer.name}) has no tls_ca: traffic between regions needs TLS; "
                      f"set \"dev_plaintext\": true only for a development stack on one machine")
        peers[peer.name] = peer
    return RegionDirectory(local, tuple(peers[name] for name in sorted(peers)), dev_plaintext)


def load_regions(path: str, local: str) -> RegionDirectory:
    """The directory of CBR_REGIONS_FILE; no file configured means a region without peers."""
    if not path:
        return parse_regions("{}", local)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"CBR_REGIONS_FILE {path}: cannot read it ({exc.strerror})") from None
    directory = parse_regions(text, local, source=f"CBR_REGIONS_FILE {path}")
    for peer in directory.peers:
        for field, file in (("tls_ca", peer.tls_ca), ("credential_file", peer.credential_file)):
            if file and not Path(file).is_file():
                raise SettingsError(f"CBR_REGIONS_FILE {path}: {peer.name}'s {field} {file} is not a file")
    return directory


def _peer(entry: object, where: str, bad) -> Peer:
    if not isinstance(entry, dict):
        raise bad(f"{where} must be an object with {', '.join(REQUIRED_PEER_FIELDS)}")
    unknown = sorted(set(entry) - PEER_FIELDS)
    if unknown:
        raise bad(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                  f"(known: {', '.join(sorted(PEER_FIELDS))})")
    for field in TEXT_FIELDS:
        if not isinstance(entry.get(field, ""), str):
            raise bad(f"{where}: {field} must be a string")
    missing = [field for field in REQUIRED_PEER_FIELDS if not entry.get(field, "").strip()]
    if missing:
        raise bad(f"{where}: missing {', '.join(missing)}")
    name = entry["name"].strip()
    if not NAME.match(name):
        raise bad(f"{where}: {name!r} is not a region name (lower-case letters, digits and '-', at most 63)")
    addr = entry["transfer_addr"].strip()
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"{where} ({name}): transfer_addr {addr!r} must be host:port")
    rate = entry.get("rate_limit_mbps", 0)
    # bool is an int in Python: refused by name, as is NaN or infinity (json accepts both spellings).
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < float("inf"):
        raise bad(f"{where} ({name}): rate_limit_mbps {rate!r} must be a number of MB/s, 0 or more (0: no limit)")
    slots = entry.get("max_concurrent", DEFAULT_MAX_CONCURRENT)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise bad(f"{where} ({name}): max_concurrent {slots!r} must be a whole number, 1 or more")
    return Peer(name, addr, entry.get("tls_ca", "").strip(), entry["credential_file"].strip(), float(rate), slots)


def open_peer_channel(peer: Peer, max_message_bytes: int = 64 * 1024 * 1024) -> grpc.aio.Channel:
    """A channel to the peer's RegionTransferService: TLS against the peer's CA, or plaintext where the
    directory's dev switch allowed it."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    if peer.plaintext:
        return grpc.aio.insecure_channel(peer.transfer_addr, options=options)
    root = Path(peer.tls_ca).read_bytes()
    return grpc.aio.secure_channel(peer.transfer_addr, grpc.ssl_channel_credentials(root), options=options)


def peer_metadata(peer: Peer) -> tuple[tuple[str, str], ...]:
    """The bearer token the peer accepts from this region, read when needed (an operator may rotate it)."""
    token = Path(peer.credential_file).read_text().strip()
    return (("authorization", f"Bearer {token}"),)


def issue_peer_token(peer_secret: str, local: str, ttl_seconds: int) -> str:
    """The credential a peer accepts from region `local`: signed with the peer's secret, role region_peer,
    subject (and project claim) "region:<local>"."""
    from cbr_common.auth import ROLE_REGION_PEER, issue_token
    return issue_token(peer_secret, project_id=f"region:{local}", subject=f"region:{local}",
                       roles=[ROLE_REGION_PEER], ttl_seconds=ttl_seconds)


def peer_region(subject: str) -> str | None:
    """The region a region_peer token's subject names, or None."""
    prefix, _, name = subject.partition(":")
    return name if prefix == "region" and NAME.match(name) else None

"""Two (or more) regions on one machine, wired as peers: `python -m cbr_devstack up-regions --run-dir DIR`.

Each region is a whole stack in DIR/<name> (its own Postgres, NATS, chunk store, services and worker). Ports of
every region are chosen before any starts, so each region's directory (DIR/<name>/regions.json) can name the
others' transfer addresses: their backup services, which serve RegionTransferService (services/backup/DESIGN.md
section 17). The credential a region presents to a peer is a `region_peer` token signed with that peer's secret.
The regions talk plaintext on 127.0.0.1, which is why the directories carry the dev switch; with `--tls` each
backup service serves RegionTransferService on a listener of its own with a self-signed certificate for 127.0.0.1
(DIR/<name>/tls/), which the other regions' directories name as its CA, as a real deployment has it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from cbr_devstack.ports import HOST, kept_port
from cbr_devstack.stack import ProviderChangeError, RunDir, _config_for_start, _locked, down, up
from cbr_devstack.state import save_config

DEFAULT_REGIONS = ("region-a", "region-b")
PEER_TOKEN_TTL = 365 * 24 * 3600


def up_regions(run_dir: Path, names: tuple[str, ...] = DEFAULT_REGIONS, tls: bool = False) -> int:
    root = Path(run_dir).absolute()
    layouts = {name: RunDir(root / name) for name in names}
    configs, taken = {}, set()
    try:
        for name, layout in layouts.items():
            layout.root.mkdir(parents=True, exist_ok=True)
            with _locked(layout):
                configs[name] = _config_for_start(layout, False, name, frozenset(taken))
            taken |= set(configs[name].ports.values())
        for name, layout in layouts.items():
            configs[name] = _with_transfer_listener(layout, configs[name], tls, taken)
            taken |= set(configs[name].ports.values())
    except ProviderChangeError as exc:
        print(f"CBR regions did not start: {exc}", file=sys.stderr)
        return 1
    for name, layout in layouts.items():
        path = layout.root / "regions.json"
        _write_private(path, json.dumps(_directory(layouts, configs, name), indent=2) + "\n")
        if configs[name].regions_file != str(path):  # before the first start of the region
            with _locked(layout):
                save_config(layout.config_file, dataclasses.replace(configs[name], regions_file=str(path)))
    for name in names:
        status = up(layouts[name].root, region=name)
        if status != 0:
            return status
    print(f"Regions {', '.join(names)} are up and peers of each other; stop them with: "
          f"{sys.executable} -m cbr_devstack down-regions --run-dir {root}")
    return 0


def down_regions(run_dir: Path) -> int:
    """Stops every region under run_dir; data, ports and secrets stay."""
    root = Path(run_dir).absolute()
    statuses = [down(folder) for folder in sorted(root.iterdir()) if (folder / "stack.json").exists()] \
        if root.is_dir() else []
    return max(statuses, default=0)


def _with_transfer_listener(layout: RunDir, config, tls: bool, taken: set[int]):
    """The region's config with (tls) or without the TLS transfer listener, saved; its certificate made once."""
    ports = dict(config.ports)
    if tls:
        ports.setdefault("transfer", kept_port(taken=set(ports.values()) | taken))
        transfer_certificate(layout.root)
    else:
        ports.pop("transfer", None)
    wanted = dataclasses.replace(config, ports=ports, transfer_tls=tls)
    if wanted != config:
        with _locked(layout):
            save_config(layout.config_file, wanted)
    return wanted


def transfer_certificate(root: Path) -> tuple[Path, Path]:
    """The region's transfer listener certificate and key (self-signed for 127.0.0.1, made on first use)."""
    folder = Path(root) / "tls"
    cert, key = folder / "transfer.pem", folder / "transfer-key.pem"
    if not (cert.exists() and key.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "365", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
        key.chmod(0o600)
    return cert, key


def _directory(layouts: dict[str, RunDir], configs: dict, local: str) -> dict:
    peers = []
    tls = all(config.transfer_tls for config in configs.values())
    for name, config in configs.items():
        if name == local:
            continue
        token_file = layouts[local].root / f"peer-{name}.token"
        _write_private(token_file, _peer_token(config.jwt_secret, local) + "\n")
        if tls:
            peers.append({"name": name, "transfer_addr": f"{HOST}:{config.ports['transfer']}",
                          "tls_ca": str(transfer_certificate(layouts[name].root)[0]),
                          "credential_file": str(token_file)})
        else:
            peers.append({"name": name, "transfer_addr": f"{HOST}:{config.ports['backup']}", "tls_ca": "",
                          "credential_file": str(token_file)})
    return {"dev_plaintext": not tls, "peers": peers}


def _peer_token(peer_secret: str, local: str) -> str:
    from cbr_common.regions import issue_peer_token
    return issue_peer_token(peer_secret, local, ttl_seconds=PEER_TOKEN_TTL)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens
    with os.fdopen(descriptor, "w") as file:
        file.write(text)

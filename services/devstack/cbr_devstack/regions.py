"""Two (or more) regions on one machine, wired as peers: `python -m cbr_devstack up-regions --run-dir DIR`.

Each region is a whole stack in DIR/<name> (its own Postgres, NATS, chunk store, services and worker). Ports of
every region are chosen before any starts, so each region's directory (DIR/<name>/regions.json) can name the
others' transfer addresses: their backup services, which serve RegionTransferService (services/backup/DESIGN.md
section 17). The credential a region presents to a peer is a `region_peer` token signed with that peer's secret.
The regions talk plaintext on 127.0.0.1, which is why the directories carry the dev switch."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from cbr_devstack.ports import HOST
from cbr_devstack.stack import ProviderChangeError, RunDir, _config_for_start, _locked, down, up
from cbr_devstack.state import save_config

DEFAULT_REGIONS = ("region-a", "region-b")
PEER_TOKEN_TTL = 365 * 24 * 3600


def up_regions(run_dir: Path, names: tuple[str, ...] = DEFAULT_REGIONS) -> int:
    root = Path(run_dir).absolute()
    layouts = {name: RunDir(root / name) for name in names}
    configs, taken = {}, set()
    try:
        for name, layout in layouts.items():
            layout.root.mkdir(parents=True, exist_ok=True)
            with _locked(layout):
                configs[name] = _config_for_start(layout, False, name, frozenset(taken))
            taken |= set(configs[name].ports.values())
    except ProviderChangeError as exc:
        print(f"CBR regions did not start: {exc}", file=sys.stderr)
        return 1
    for name, layout in layouts.items():
        path = layout.root / "regions.json"
        _write_private(path, json.dumps(_directory(layouts, configs, name), indent=2) + "\n")
        if configs[name].regions_file != str(path):
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


def _directory(layouts: dict[str, RunDir], configs: dict, local: str) -> dict:
    peers = []
    for name, config in configs.items():
        if name == local:
            continue
        token_file = layouts[local].root / f"peer-{name}.token"
        _write_private(token_file, _peer_token(config.jwt_secret, local) + "\n")
        peers.append({"name": name, "transfer_addr": f"{HOST}:{config.ports['backup']}", "tls_ca": "",
                      "credential_file": str(token_file)})
    return {"dev_plaintext": True, "peers": peers}


def _peer_token(peer_secret: str, local: str) -> str:
    from cbr_common.regions import issue_peer_token
    return issue_peer_token(peer_secret, local, ttl_seconds=PEER_TOKEN_TTL)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens
    with os.fdopen(descriptor, "w") as file:
        file.write(text)

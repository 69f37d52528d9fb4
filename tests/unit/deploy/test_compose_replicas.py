"""The compose file runs two replicas of each service (profile `replicas`), reached through the service's own
DNS name; the default override publishes each on a port of its own."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SERVICES = ("vault", "backup", "policy", "replication")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def override() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.override.yml").read_text())


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_second_replica_behind_its_name(compose, override, name):
    first, second = compose["services"][name], compose["services"][f"{name}-2"]
    same = ("image", "environment", "healthcheck", "depends_on", "volumes", "secrets")
    assert {k: first.get(k) for k in same} == {k: second.get(k) for k in same}
    assert second["networks"]["default"]["aliases"] == [name]  # `<name>:port` resolves to both replicas
    assert second["profiles"] == ["replicas"]
    assert override["services"][name]["ports"] != override["services"][f"{name}-2"]["ports"]


def test_every_published_port_is_its_own(override):
    published = [str(p).rsplit(":", 1)[0] for n, svc in override["services"].items() for p in svc.get("ports", [])]
    assert len(published) == len(set(published))

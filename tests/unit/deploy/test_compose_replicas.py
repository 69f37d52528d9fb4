"""The compose file runs two replicas of each service, reached through the service's own DNS name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SERVICES = ("vault", "backup", "policy", "replication")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_second_replica_behind_its_name(compose, name):
    first, second = compose["services"][name], compose["services"][f"{name}-2"]
    same = ("image", "environment", "healthcheck", "depends_on", "volumes", "secrets")
    assert {k: first.get(k) for k in same} == {k: second.get(k) for k in same}
    assert second["networks"]["default"]["aliases"] == [name]  # `<name>:port` resolves to both replicas
    assert first["ports"] != second["ports"]


def test_every_published_port_is_its_own(compose):
    published = [str(p).rsplit(":", 1)[0] for n, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert len(published) == len(set(published))

"""Static checks of the compose file's Postgres standby: opt-in, streaming from `postgres` with its own volume, and
a database URL that names both nodes when asked and follows the writable one."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.engine import make_url

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} with this environment."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), value)


def connect_args(url: str) -> dict:
    return PGDialectAsync_psycopg().create_connect_args(make_url(url))[1]


def test_the_standby_is_opt_in_and_streams_from_postgres(compose):
    standby, primary = compose["services"]["postgres-standby"], compose["services"]["postgres"]
    assert standby["profiles"] == ["standby"]  # the default stack is one Postgres, as before
    assert standby["image"] == primary["image"]
    assert standby["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert standby["environment"]["CBR_PG_PRIMARY"] == "postgres"
    assert standby["environment"]["POSTGRES_USER"] == primary["environment"]["POSTGRES_USER"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in standby["volumes"]}
    assert mounts["/var/lib/postgresql/data"] == "pgstandby" and "pgstandby" in compose["volumes"]
    script = DEPLOY / mounts[standby["entrypoint"][-1]].removeprefix("./")
    assert "pg_basebackup" in script.read_text() and "synchronous_standby_names" in script.read_text()
    initdb = {m.split(":")[1]: m.split(":")[0] for m in primary["volumes"]}
    hba = DEPLOY / initdb["/docker-entrypoint-initdb.d/replication.sh"].removeprefix("./")
    assert "host replication" in hba.read_text()


def test_the_services_url_names_the_standby_when_asked_and_wants_the_writable_node(compose):
    url = compose["x-cbr-env"]["CBR_DATABASE_URL"]
    alone = connect_args(interpolated(url, {}))
    assert (alone["host"], alone["port"], alone["target_session_attrs"]) == ("postgres", "5432", "read-write")
    paired = connect_args(interpolated(url, {"CBR_DB_HOSTS": "postgres,postgres-standby",
                                             "CBR_DB_PORTS": "5432,5432"}))
    assert (paired["host"], paired["port"]) == ("postgres,postgres-standby", "5432,5432")
    assert paired["dbname"] == "cbr" and paired["user"] == "cbr"

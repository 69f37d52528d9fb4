#!/bin/sh
# The streaming standby of the `postgres` service (deploy/README.md, "A Postgres standby"), run as root in the
# same image. Its first start copies the primary (pg_basebackup -R through the replication slot cbr_standby);
# once it streams, the primary commits synchronously: a commit is answered only when this standby has it.
set -eu
PRIMARY=${CBR_PG_PRIMARY:-postgres}
NAME=cbr_standby  # the slot, and the application_name the primary waits for
export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGCONNECT_TIMEOUT=5
PATH="$PATH:$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n 1)"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
on_primary() { psql -h "$PRIMARY" -d postgres -qAtX -c "$1"; }

until pg_isready -h "$PRIMARY" -q; do sleep 1; done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  on_primary "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name = '$NAME' AND NOT active" >/dev/null
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  as_postgres pg_basebackup -h "$PRIMARY" -D "$PGDATA" -R -C -S "$NAME" -X stream -c fast
fi

# On the command line, so they win over the primary's postgresql.auto.conf copied with the data: promoted, this
# node must not wait for a standby of its own. Arguments are further server settings (`-c name=value`).
as_postgres postgres -c cluster_name="$NAME" -c hot_standby=on -c synchronous_standby_names= "$@" &
pid=$!
trap 'kill -INT "$pid"' INT TERM  # `docker compose stop`: Postgres' fast shutdown
until [ "$(on_primary "SELECT count(*) FROM pg_stat_replication
                       WHERE application_name = '$NAME' AND state = 'streaming'" 2>/dev/null)" = 1 ]; do
  kill -0 "$pid" 2>/dev/null || exit 1
  sleep 1
done
on_primary "ALTER SYSTEM SET synchronous_standby_names = '$NAME'" && on_primary "SELECT pg_reload_conf()" >/dev/null
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done

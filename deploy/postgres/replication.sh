#!/bin/sh
# Run once by the postgres image's entrypoint when its data volume is new: lets `postgres-standby` (the
# `standby` profile, deploy/README.md) stream from this primary. Harmless without a standby.
echo "host replication $POSTGRES_USER all scram-sha-256" >> "$PGDATA/pg_hba.conf"

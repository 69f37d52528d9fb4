# PostgreSQL 15 from Debian's packages, standing in for postgres:16: the same interface for what the compose file
# uses (POSTGRES_USER/PASSWORD/DB, PGDATA, PGPORT, `postgres -c ...` as the command, pg_isready).
ARG BASE=cbr-local/debian:bookworm
FROM ${BASE}
# No "main" cluster from the package's postinst: the entrypoint creates the one cluster, in PGDATA.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/cbr.conf \
    && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENTRYPOINT ["postgres-entrypoint"]
# Postgres's fast shutdown (SIGINT), as the official image does.
STOPSIGNAL SIGINT
CMD ["postgres"]

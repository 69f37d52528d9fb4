# nats-server (2.9, JetStream) from Debian's packages, standing in for nats:2.10-alpine; wget for the health check.
ARG BASE=cbr-local/debian:bookworm
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server wget \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["nats-server"]

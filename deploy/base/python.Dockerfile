# Python 3.11 from Debian's packages, standing in for python:3.11-slim where no registry is reachable
# (deploy/base-images.sh builds it on the debootstrapped Debian image). Interpreter at /usr/bin/python.
ARG BASE=cbr-local/debian:bookworm
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The building host's CA bundle (deploy/base-images.sh puts it in the context), for pip behind a TLS-inspecting proxy.
COPY host-ca-certificates.crt /etc/ssl/certs/cbr-host-ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/cbr-host-ca-certificates.crt
CMD ["python"]

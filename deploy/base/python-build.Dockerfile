# The local Python image plus what compiles C extensions (Python.h, gcc): the build stage of deploy/Dockerfile.
# The official python:3.11-slim carries the headers itself, so there both stages use one image.
ARG BASE=cbr-local/python:3.11-bookworm
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
